"""OLMoE: the llama block without Q/K permutation (NeoX RoPE), RMSNorm over all of the
queries and all of the keys before RoPE, and every FFN a mixture of experts whose picked
probabilities are used as the router gives them (no renormalising)."""
from lila.models.blocks import PreNormDecoder

architecture = PreNormDecoder(neox=True, qk_norm="full", experts="required", norm_topk=False)
