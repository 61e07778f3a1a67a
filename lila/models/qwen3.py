"""Qwen3 (dense): the llama block with RMSNorm on each query and key head (QK-norm) before
RoPE, no projection biases, NeoX RoPE, and a head size independent of the model width."""
from lila.models.blocks import PreNormDecoder

architecture = PreNormDecoder(neox=True, qk_norm="head")
