"""Qwen2 MoE (Qwen1.5-MoE, Qwen2-57B-A14B): the Qwen2 block with every FFN a mixture of
experts plus a shared expert that every token goes through, scaled by its own sigmoid gate;
the picked experts' probabilities are used as the router gives them (no renormalising)."""
from lila.models.blocks import PreNormDecoder

architecture = PreNormDecoder(neox=True, bias=True, experts="required", shared_expert=True,
                              norm_topk=False)
