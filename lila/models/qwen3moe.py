"""Qwen3 MoE (Qwen3-30B-A3B and kin): the Qwen3 block with every FFN a mixture of experts,
the router's top-k probabilities renormalised to sum 1 (norm_topk_prob)."""
from lila.models.blocks import PreNormDecoder

architecture = PreNormDecoder(neox=True, qk_norm="head", experts="required")
