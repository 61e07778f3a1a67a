"""Write a GGUF with a real model's shapes and random weights, to benchmark sizes we do not ship.

Speed depends on the shapes and the weight type, not on what the weights say, so a file
with the tensors of a 1B llama (the default preset, Llama-3.2-1B's shapes) in Q4_0 measures
what a real 1B Q4_0 model would, without downloading one. The file is a `llama`
architecture GGUF that both `lila` and llama.cpp load:

  - every matrix is made of blocks of N(0, 0.02^2) samples (the usual initialisation
    scale, so that activations stay finite through all the layers) quantized with
    gguf.quants: a pool of such blocks is quantized once per type, and each tensor is
    filled with blocks picked from it at random (see BlockPool);
  - norm weights are 1 (F32); no rope scaling;
  - the tokenizer (vocabulary, merges, special ids, chat template) is copied from the
    SmolLM2 GGUF, so the vocabulary is 49152 whatever the preset.

Tensors are generated and written one at a time, so memory stays small (one tensor's
stored bytes) and a 1B Q4_0 file takes seconds. The text it generates is gibberish.

    .venv/bin/python bench/synthetic_gguf.py --out /tmp/llama-1b-q4_0.gguf
    .venv/bin/python bench/synthetic_gguf.py --preset qwen2-0.5b-like --type q8_0 --out q.gguf
    .venv/bin/python bench/synthetic_gguf.py --layers 4 --embed-type q8_0 --no-tied --out small.gguf

The last line printed gives the file's size, parameter count and how long writing took.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType, LlamaFileType

from lila.formats.gguf import GGUFFile
from lila.store import default_model_path

ARCH = "llama"
INIT_STD = 0.02
# 8M samples: 262144 distinct Q4_0 blocks, quantized in a fraction of a second.
POOL_ELEMENTS = 1 << 23
POOL_ROW = 1 << 15
# Blocks gathered per step, so that the index array stays small (64 MB of int32 at most).
CHUNK_BLOCKS = 1 << 24

TYPES = {
    "f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16,
    "q4_0": GGMLQuantizationType.Q4_0, "q4_1": GGMLQuantizationType.Q4_1,
    "q5_0": GGMLQuantizationType.Q5_0, "q5_1": GGMLQuantizationType.Q5_1,
    "q8_0": GGMLQuantizationType.Q8_0, "q4_k": GGMLQuantizationType.Q4_K,
    "q6_k": GGMLQuantizationType.Q6_K,
}
# general.file_type, which llama.cpp shows as the model's type; it does not affect loading.
FILE_TYPES = {
    "f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16, "q4_0": LlamaFileType.MOSTLY_Q4_0,
    "q4_1": LlamaFileType.MOSTLY_Q4_1, "q5_0": LlamaFileType.MOSTLY_Q5_0, "q5_1": LlamaFileType.MOSTLY_Q5_1,
    "q8_0": LlamaFileType.MOSTLY_Q8_0, "q4_k": LlamaFileType.MOSTLY_Q4_K_M, "q6_k": LlamaFileType.MOSTLY_Q6_K,
}

ARRAY_ELEMENT_TYPES = {
    np.dtype(np.int8): gguf.GGUFValueType.INT8, np.dtype(np.uint8): gguf.GGUFValueType.UINT8,
    np.dtype(np.int16): gguf.GGUFValueType.INT16, np.dtype(np.uint16): gguf.GGUFValueType.UINT16,
    np.dtype(np.int32): gguf.GGUFValueType.INT32, np.dtype(np.uint32): gguf.GGUFValueType.UINT32,
    np.dtype(np.int64): gguf.GGUFValueType.INT64, np.dtype(np.uint64): gguf.GGUFValueType.UINT64,
    np.dtype(np.float32): gguf.GGUFValueType.FLOAT32, np.dtype(np.float64): gguf.GGUFValueType.FLOAT64,
    np.dtype(np.bool_): gguf.GGUFValueType.BOOL,
}


@dataclass(frozen=True)
class Shapes:
    dim: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_base: float
    rms_eps: float
    context: int
    tied: bool  # the output projection reuses token_embd


PRESETS = {
    "llama-1b": Shapes(dim=2048, layers=16, ffn=8192, heads=32, kv_heads=8, head_dim=64,
                       rope_base=500000.0, rms_eps=1e-5, context=4096, tied=True),
    "llama-3b": Shapes(dim=3072, layers=28, ffn=8192, heads=24, kv_heads=8, head_dim=128,
                       rope_base=500000.0, rms_eps=1e-5, context=4096, tied=True),
    "smollm2-135m-shapes": Shapes(dim=576, layers=30, ffn=1536, heads=9, kv_heads=3, head_dim=64,
                                  rope_base=100000.0, rms_eps=1e-5, context=8192, tied=True),
    "smollm2-360m-shapes": Shapes(dim=960, layers=32, ffn=2560, heads=15, kv_heads=5, head_dim=64,
                                  rope_base=100000.0, rms_eps=1e-5, context=8192, tied=True),
    "smollm2-1.7b-shapes": Shapes(dim=2048, layers=24, ffn=8192, heads=32, kv_heads=32, head_dim=64,
                                  rope_base=130000.0, rms_eps=1e-5, context=8192, tied=True),
    # Qwen2's q/k/v biases are left out: written as a llama, only the shapes are Qwen2-0.5B's.
    "qwen2-0.5b-like": Shapes(dim=896, layers=24, ffn=4864, heads=14, kv_heads=2, head_dim=64,
                              rope_base=1000000.0, rms_eps=1e-6, context=4096, tied=True),
}


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # numpy order: a matrix is (out_features, in_features)
    qtype: GGMLQuantizationType

    @property
    def nbytes(self) -> int:
        return int(np.prod(gguf.quant_shape_to_byte_shape(self.shape, self.qtype)))

    @property
    def n_params(self) -> int:
        return int(np.prod(self.shape))


# Types gguf.quants cannot quantize to: random codes, with the f16 scales at these byte
# offsets of a block chosen so that the weights come out about INIT_STD in size (see
# BlockPool.random_blocks).
RANDOM_CODE_SCALES = {
    # d, dmin: w = d * sc * q - dmin * m, with 6-bit sc, m (~32) and 4-bit q (~7.5)
    GGMLQuantizationType.Q4_K: ((0, INIT_STD / 240), (2, INIT_STD / 32)),
    # d: w = d * sc * (q - 32), with int8 sc (~64) and 6-bit q (~18 from 32)
    GGMLQuantizationType.Q6_K: ((208, INIT_STD / 1150),),
}


def can_quantize(qtype: GGMLQuantizationType) -> bool:
    """Whether the installed gguf package has a quantizer for qtype (some types it can only read)."""
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.quants.quantize(np.zeros((1, block_size), dtype=np.float32), qtype)
    except NotImplementedError:
        return False
    return True


def can_write(qtype: GGMLQuantizationType) -> bool:
    return qtype in RANDOM_CODE_SCALES or can_quantize(qtype)


def tensor_plans(shapes: Shapes, vocab: int, matrix_type: GGMLQuantizationType,
                 embed_type: GGMLQuantizationType, output_type: GGMLQuantizationType) -> list[TensorPlan]:
    """Every tensor of the model, in llama.cpp's order, with the type it is stored in."""
    f32 = GGMLQuantizationType.F32
    q_rows, kv_rows = shapes.heads * shapes.head_dim, shapes.kv_heads * shapes.head_dim
    plans = [TensorPlan("token_embd.weight", (vocab, shapes.dim), embed_type)]
    for layer in range(shapes.layers):
        blk = f"blk.{layer}"
        plans += [
            TensorPlan(f"{blk}.attn_norm.weight", (shapes.dim,), f32),
            TensorPlan(f"{blk}.attn_q.weight", (q_rows, shapes.dim), matrix_type),
            TensorPlan(f"{blk}.attn_k.weight", (kv_rows, shapes.dim), matrix_type),
            TensorPlan(f"{blk}.attn_v.weight", (kv_rows, shapes.dim), matrix_type),
            TensorPlan(f"{blk}.attn_output.weight", (shapes.dim, q_rows), matrix_type),
            TensorPlan(f"{blk}.ffn_norm.weight", (shapes.dim,), f32),
            TensorPlan(f"{blk}.ffn_gate.weight", (shapes.ffn, shapes.dim), matrix_type),
            TensorPlan(f"{blk}.ffn_up.weight", (shapes.ffn, shapes.dim), matrix_type),
            TensorPlan(f"{blk}.ffn_down.weight", (shapes.dim, shapes.ffn), matrix_type),
        ]
    plans.append(TensorPlan("output_norm.weight", (shapes.dim,), f32))
    if not shapes.tied:
        plans.append(TensorPlan("output.weight", (vocab, shapes.dim), output_type))
    return plans


def check_types(plans: list[TensorPlan]) -> None:
    """Fail before writing anything if a type cannot be produced or does not fit a row length."""
    for qtype in sorted({plan.qtype for plan in plans}, key=lambda t: t.name):
        if not can_write(qtype):
            usable = ", ".join(name for name, t in TYPES.items() if can_write(t))
            raise SystemExit(f"error: gguf {package_version('gguf')} cannot quantize to {qtype.name} (gguf.quants only "
                             f"reads it); usable types: {usable}")
    for plan in plans:
        block_size, _ = gguf.GGML_QUANT_SIZES[plan.qtype]
        if plan.shape[-1] % block_size:
            raise SystemExit(f"error: {plan.name} has rows of {plan.shape[-1]}, not a multiple of "
                             f"{plan.qtype.name}'s block of {block_size}")


class BlockPool:
    """Quantized blocks of N(0, INIT_STD^2) samples, from which tensors are drawn block by block.

    Drawing and quantizing a billion normal samples takes most of a minute on two cores; a
    pool of POOL_ELEMENTS samples quantized once per type, then blocks picked from it at
    random (a gather, at memory speed), takes seconds. Every block of the file is still a
    real quantized block of normal samples; blocks recur at random places, which no kernel
    can exploit, so speed is that of independent weights."""

    def __init__(self, rng: np.random.Generator, elements: int = POOL_ELEMENTS):
        self.rng = rng
        self.elements = elements
        self.pools: dict[GGMLQuantizationType, np.ndarray] = {}

    def blocks(self, qtype: GGMLQuantizationType) -> np.ndarray:
        """The pool for qtype: (number of blocks, bytes per block) uint8."""
        if qtype not in self.pools and not can_quantize(qtype):
            self.pools[qtype] = self.random_blocks(qtype)
        if qtype not in self.pools:
            _, type_size = gguf.GGML_QUANT_SIZES[qtype]
            # Wide rows: gguf.quants works row group by row group, slow on many short rows.
            row = min(POOL_ROW, self.elements)
            samples = self.rng.standard_normal((self.elements // row, row), dtype=np.float32)
            samples *= INIT_STD
            self.pools[qtype] = gguf.quants.quantize(samples, qtype).view(np.uint8).reshape(-1, type_size)
        return self.pools[qtype]

    def random_blocks(self, qtype: GGMLQuantizationType) -> np.ndarray:
        """Blocks of random codes and sub-block scales, their f16 scales set so that the
        weights are about INIT_STD in size: not quantized normal samples, but the same
        work for a kernel."""
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        n_blocks = self.elements // block_size
        blocks = self.rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        for offset, scale in RANDOM_CODE_SCALES[qtype]:
            scales = (scale * self.rng.uniform(0.5, 1.5, n_blocks)).astype("<f2")
            blocks[:, offset:offset + 2] = scales.view(np.uint8).reshape(-1, 2)
        return blocks

    def tensor(self, plan: TensorPlan) -> np.ndarray:
        """The tensor's stored bytes: norms are 1, matrices random blocks from the pool."""
        if len(plan.shape) == 1:
            return np.ones(plan.shape, dtype=np.float32)
        pool = self.blocks(plan.qtype)
        block_size, type_size = gguf.GGML_QUANT_SIZES[plan.qtype]
        n_blocks = plan.n_params // block_size
        out = np.empty((n_blocks, type_size), dtype=np.uint8)
        for start in range(0, n_blocks, CHUNK_BLOCKS):
            stop = min(n_blocks, start + CHUNK_BLOCKS)
            picks = self.rng.integers(0, len(pool), size=stop - start, dtype=np.int32)
            np.take(pool, picks, axis=0, out=out[start:stop])
        return out


def metadata_type(value: object) -> tuple[gguf.GGUFValueType, gguf.GGUFValueType | None]:
    """The GGUF (type, array element type) to write a value read by lila's GGUF reader."""
    scalar_types = {bool: gguf.GGUFValueType.BOOL, int: gguf.GGUFValueType.UINT32,  # ids, as llama.cpp writes them
                    float: gguf.GGUFValueType.FLOAT32, str: gguf.GGUFValueType.STRING}
    if isinstance(value, np.ndarray):
        return gguf.GGUFValueType.ARRAY, ARRAY_ELEMENT_TYPES[value.dtype]
    if isinstance(value, list):
        return gguf.GGUFValueType.ARRAY, scalar_types[type(value[0])]
    return scalar_types[type(value)], None


def copy_tokenizer(writer: gguf.GGUFWriter, source: Path) -> int:
    """Copy every tokenizer.* key of source; returns the vocabulary size."""
    # lila's reader, not gguf.GGUFReader: it decodes the 49k tokens and merges in 50 ms, not 8 s.
    with GGUFFile.open(source) as model:
        tokenizer_keys = {name: value for name, value in model.metadata.items() if name.startswith("tokenizer.")}
    for name, value in tokenizer_keys.items():
        value_type, element_type = metadata_type(value)
        if isinstance(value, np.ndarray):
            value = value.tolist()  # the writer packs sequences, not arrays
        writer.add_key_value(name, value, value_type, sub_type=element_type)
    vocab = len(tokenizer_keys.get("tokenizer.ggml.tokens", []))
    if not vocab:
        raise SystemExit(f"error: {source} has no tokenizer.ggml.tokens to copy")
    return vocab


def write_metadata(writer: gguf.GGUFWriter, shapes: Shapes, name: str, file_type: LlamaFileType,
                   vocab: int) -> None:
    writer.add_name(name)
    writer.add_context_length(shapes.context)
    writer.add_embedding_length(shapes.dim)
    writer.add_block_count(shapes.layers)
    writer.add_feed_forward_length(shapes.ffn)
    writer.add_head_count(shapes.heads)
    writer.add_head_count_kv(shapes.kv_heads)
    writer.add_key_length(shapes.head_dim)
    writer.add_value_length(shapes.head_dim)
    writer.add_rope_dimension_count(shapes.head_dim)
    writer.add_rope_freq_base(shapes.rope_base)
    writer.add_layer_norm_rms_eps(shapes.rms_eps)
    writer.add_vocab_size(vocab)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def write_model(out: Path, shapes: Shapes, name: str, args: argparse.Namespace,
                pool_elements: int = POOL_ELEMENTS) -> tuple[int, int]:
    """Write the file, streaming tensor by tensor; returns (parameters, bytes of tensor data).
    Tests pass a small pool_elements: fewer distinct blocks, written in a fraction of the time."""
    writer = gguf.GGUFWriter(str(out), ARCH)
    vocab = copy_tokenizer(writer, args.tokenizer_from)
    matrix_type = TYPES[args.type]
    plans = tensor_plans(shapes, vocab, matrix_type, TYPES[args.embed_type or args.type],
                         TYPES[args.output_type or args.type])
    check_types(plans)
    write_metadata(writer, shapes, name, FILE_TYPES[args.type], vocab)
    # Declare every tensor first (the header holds all their offsets), then stream the data.
    for plan in plans:
        writer.add_tensor_info(plan.name, plan.shape, np.dtype(np.float32), plan.nbytes, raw_dtype=plan.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    pool = BlockPool(np.random.default_rng(args.seed), pool_elements)
    for index, plan in enumerate(plans):
        writer.write_tensor_data(pool.tensor(plan))
        if plan.name.endswith("ffn_down.weight") or index == len(plans) - 1:
            print(f"\r  {index + 1}/{len(plans)} tensors", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    writer.close()
    return sum(plan.n_params for plan in plans), sum(plan.nbytes for plan in plans)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="GGUF file to write")
    parser.add_argument("--preset", choices=PRESETS, default="llama-1b", help="shapes to start from (default: %(default)s)")
    parser.add_argument("--type", choices=TYPES, default="q4_0", help="type of the layer matrices (default: %(default)s)")
    parser.add_argument("--embed-type", choices=TYPES, help="type of token_embd (default: --type)")
    parser.add_argument("--output-type", choices=TYPES, help="type of output.weight when untied (default: --type)")
    parser.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                        help="output reuses token_embd (default: the preset's)")
    for field in ("dim", "layers", "ffn", "heads", "kv_heads", "head_dim", "context"):
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, help=f"override the preset's {field}")
    parser.add_argument("--rope-base", type=float, help="override the preset's rope base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-from", type=Path, default=default_model_path(),
                        help="GGUF whose tokenizer is copied (default: the SmolLM2 model)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    overrides = {field.name: getattr(args, field.name) for field in dataclasses.fields(Shapes)
                 if getattr(args, field.name, None) is not None}
    shapes = dataclasses.replace(PRESETS[args.preset], **overrides)
    if shapes.heads % shapes.kv_heads:
        raise SystemExit(f"error: {shapes.heads} heads cannot be shared by {shapes.kv_heads} kv heads")
    if args.tokenizer_from is None:
        raise SystemExit("error: the SmolLM2 model is not installed; pass --tokenizer-from GGUF")
    name = f"synthetic {args.preset} {args.type}" + (" (modified)" if overrides else "")
    start = time.perf_counter()
    n_params, n_bytes = write_model(args.out, shapes, name, args)
    elapsed = time.perf_counter() - start
    print(f"wrote {args.out}: {args.out.stat().st_size / 1e6:.0f} MB, {n_params / 1e9:.3f} B parameters "
          f"({n_bytes / 1e6:.0f} MB of tensors), {shapes} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
