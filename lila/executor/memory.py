"""Whether a model's weights stream from disk (low-memory mode), and how to show it.

Weights are read from file-backed maps (the GGUF file, and in low-memory mode a spill
file of converted weights): the kernel may drop those pages under memory pressure and
read them from disk again when they are next used. So a model larger than memory still
runs, as fast as the disk supplies what does not fit. Everything else (the KV cache,
activations, converted weights in normal mode) is anonymous memory, which must fit.

Advice (madvise) on the weights that are read: measured with a 1B Q4_0 (606 MB) under a
400 MB cgroup limit, 2 threads, with none decode ran at 1.5-1.8 tok/s; SEQUENTIAL on the
map 0.9, RANDOM 0.2, WILLNEED at load no change, and per layer, after each matmul, COLD
0.8, PAGEOUT 1.2, DONTNEED no change, WILLNEED on the next layer 0.9. The kernel's own
reclaim keeps part of the cycle of layers resident, and every advice tried did as well or
worse, so Lila gives none there. The one advice it gives is on pages that are never read
again: the source of weights converted at load (GGUFFile.advise_unused, MADV_COLD), so
that they are the first to go.
"""
from __future__ import annotations

import os

from lila.errors import LilaError

# Keys of a backend's memory_estimate for the weights that live in file-backed maps
# (in low-memory mode, for the converted ones); every other entry is anonymous memory.
MAPPED = "weights (mapped)"
CONVERTED = "weights (converted to Q8_0)"
MB = 1 << 20
GB = 1 << 30


def streaming(memory: dict[str, int], low_memory: bool | None, available: int) -> tuple[bool, str | None]:
    """Whether weights stream from disk (low-memory mode), and the notice to print when
    that was decided here rather than asked for. low_memory: True or False forces the
    mode; None reads LILA_LOW_MEMORY, else streams only when the model does not fit.
    Raises a LilaError when even the memory streaming cannot spare does not fit."""
    if low_memory is None:
        low_memory = _environment_choice()
    need = sum(memory.values())
    resident = need - memory.get(MAPPED, 0) - memory.get(CONVERTED, 0)
    if low_memory is False or (low_memory is None and need <= available):
        if need > available:
            parts = ", ".join(f"{k} {v // MB} MB" for k, v in memory.items())
            raise LilaError(f"the model needs about {need // MB} MB ({parts}) but only "
                            f"{available // MB} MB is available; try a smaller --ctx-size, "
                            "or let its weights stream from disk (--low-memory)")
        return False, None
    if resident > available:
        parts = ", ".join(f"{k} {v // MB} MB" for k, v in memory.items()
                          if k not in (MAPPED, CONVERTED))
        raise LilaError(f"even streaming its weights from disk, the model needs about "
                        f"{resident // MB} MB ({parts}) but only {available // MB} MB is "
                        "available; try a smaller --ctx-size")
    notice = None if low_memory else (
        f"model needs {_size(need)}, {_size(available)} available: streaming weights from disk "
        "(slower)")
    return True, notice


def _size(nbytes: int) -> str:
    return f"{nbytes / GB:.1f} GB" if nbytes >= GB else f"{nbytes // MB} MB"


def _environment_choice() -> bool | None:
    value = os.environ.get("LILA_LOW_MEMORY", "")
    if value not in ("", "0", "1"):
        raise LilaError(f"LILA_LOW_MEMORY is {value!r}; set it to 1 (stream weights) or 0 (never)")
    return None if value == "" else value == "1"


def summary(low_memory: bool, resident: dict[str, int]) -> str:
    """The resident set and the mode, for a line of output:
    "420 MB resident (52 MB anonymous, 368 MB file-backed), weights streaming from disk"."""
    split = (f" ({resident['anonymous'] // MB} MB anonymous, {resident['file_backed'] // MB} MB "
             "file-backed)" if "file_backed" in resident else "")
    mode = "weights streaming from disk (low-memory mode)" if low_memory else "weights in memory"
    return f"{resident['resident'] // MB} MB resident{split}, {mode}"
