"""Llama (Llama 2/3, SmolLM2, TinyLlama, Mistral): pre-norm decoder, SwiGLU, GQA, RoPE.
Mixtral is a llama file with expert_count: every FFN a mixture of experts, the router's
top-k probabilities renormalised (a softmax over the picked ones).

GGUF stores the Q and K rows permuted so that RoPE rotates adjacent pairs (2i, 2i+1).
"""
from lila.models.blocks import PreNormDecoder

architecture = PreNormDecoder(neox=False, experts="optional")
