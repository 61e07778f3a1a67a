"""Qwen2 / Qwen2.5: the llama block with biases on the Q, K and V projections, NeoX RoPE."""
from lila.models.blocks import PreNormDecoder

architecture = PreNormDecoder(neox=True, bias=True)
