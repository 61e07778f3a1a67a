"""Model file formats Lila reads: GGUF (see formats/README.md)."""

from lila.formats.gguf import GGMLType, GGUFFile, TensorInfo

__all__ = ["GGMLType", "GGUFFile", "TensorInfo"]
