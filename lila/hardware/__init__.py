"""What the machine offers (hardware.cpu) and what Lila runs on it (hardware.backends)."""
from lila.hardware.backends import (BACKENDS, KERNEL_FAMILIES, Backend, BackendChoice,
                                    KernelFamily, choose_backend, supported_families)
from lila.hardware.cpu import CpuInfo, detect

__all__ = ["detect", "CpuInfo", "choose_backend", "BackendChoice", "supported_families",
           "Backend", "BACKENDS", "KernelFamily", "KERNEL_FAMILIES"]
