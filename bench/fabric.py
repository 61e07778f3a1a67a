"""What LoRA adapters in the memory fabric cost: prefill and decode with and without them,
fused into Lila's matmul ops or split into ops of their own, and next to llama.cpp.

For each model of --models, the configurations

  base         no adapters
  C x rank R   C adapters (each C of --counts), each of rank R (each R of --ranks) on all seven
               projections (attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down),
               each in a namespace of its own; with --gates multi (the default) the runs with
               more than one adapter gate every namespace (w ~ N(0, 0.02^2) per dim, b = 0)

are measured on each engine of --engines:

  fused      lila.load(fuse_adapters=True): the adapters' products inside the native matmuls
  split      lila.load(fuse_adapters=False): the products as ops of their own after each
             matmul (and, on those matmuls, no fused GLU or residual add)
  llama.cpp  llama-cpp-python with the same adapters as GGUF LoRA files, through
             bench/llamacpp_driver.py (a fresh process per run, loading model and adapters);
             llama.cpp has no gates, so a gated configuration runs ungated there
  floor      no adapters, but as many more bytes to read per token: a synthetic model
             (bench/synthetic_gguf.py, random weights) of the base's shapes and types whose
             FFN is widened until its weights are as many bytes more as the fused engine's
             stacked adapters (model.fabric.memory less each adapter's own: the copies the
             kernels read, and under 1 MB of scratch); its base is the same synthetic model
             unwidened. What reading those bytes costs the machine with no adapter arithmetic
             at all, the floor under the fused engine's cost where decode reads from memory

Each Lila engine is one model load per model; adapters go in and out through
model.fabric.load / unload, the live path, between measurements. A measurement is one
repetition of lila.cli.bench.measure (`lila bench`'s, after its warm-up pass) or of the
llama.cpp driver (the same): pp is a prefill of -p random tokens as one batch, tg -n greedy
single-token steps after it. Each of the -r repetitions measures every configuration on
every engine in turn, so a busy stretch of the machine hits them alike; the table gives
the median (min..max) and the ratio of medians to the same engine's base. The adapter
memory is model.fabric.memory for Lila, the GGUF files' size for llama.cpp (which keeps the
tensors as stored), and for floor the bytes its model was widened by (at least).

The adapters are random (A ~ N(0, 1/in), B ~ N(0, 0.01^2), alpha = rank so alpha / r = 1),
stored in fp16 and written twice, as a PEFT directory for Lila and as a GGUF LoRA file
(what llama.cpp's convert_lora_to_gguf.py writes, B of attn_q and attn_k permuted as for
the base model) for llama.cpp, so both engines get the same numbers. They are kept in
--adapters and reused. `llama-1b` in --models is bench/synthetic_gguf.py's 1B Q4_0 llama,
written to --synthetic the first time.

    .venv/bin/python bench/fabric.py --threads 2 --json                   # the full table
    .venv/bin/python bench/fabric.py --models smollm2 --ranks 16 --counts 5 --gates both \\
        --engines fused,llama.cpp --threads 2 -r 5 --json                 # next to llama.cpp
    .venv/bin/python bench/fabric.py --models smollm2 --ranks 16 --counts 1,5 \
        --engines fused,floor -r 5                                        # against the bytes' cost
    .venv/bin/python bench/fabric.py --quick                              # half a minute

llama.cpp runs with the llama_cpp of --llamacpp-python, by default bench/.venv-llamacpp's
(built by compare_llamacpp.py if missing); on a CPU with AMX the driver turns llama.cpp's
repacked weight buffers off (see bench/llamacpp_driver.py), and the table says so.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import save_file

import lila
from lila.cli.bench import measure
from lila.errors import LilaError
from lila.fabric.fabric import DEFAULT_NAMESPACES
from lila.store import resolve_model

from compare_llamacpp import LLAMACPP_PACKAGE, BenchError, llamacpp_python, run_llamacpp_python

BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = Path("/tmp/lila-fabric-bench")
SYNTHETIC = "llama-1b"
ENGINES = ("fused", "split", "llama.cpp", "floor")
# GGUF projection -> PEFT module, as lila.fabric's reader and convert_lora_to_gguf.py map them.
PROJECTIONS = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}
QUICK = {"models": "smollm2", "ranks": "16", "counts": "1,5", "reps": 1, "n_prompt": 32, "n_gen": 16}
DEFAULTS = {"models": f"smollm2,{SYNTHETIC}", "ranks": "4,8,16,32", "counts": "1,5", "reps": 3,
            "n_prompt": 64, "n_gen": 64}


@dataclass(frozen=True)
class Config:
    count: int          # adapters, 0 for the base
    rank: int
    gated: bool

    @property
    def label(self) -> str:
        if not self.count:
            return "base"
        return f"{self.count} x rank {self.rank}" + (", gated" if self.gated else "")


@dataclass(frozen=True)
class AdapterFiles:
    peft: Path          # directory: adapter_config.json + adapter_model.safetensors
    gguf: Path


def configs(ranks: list[int], counts: list[int], gates: str) -> list[Config]:
    chosen = [Config(0, 0, False)]
    for rank in ranks:
        for count in counts:
            ways = {"none": [False], "multi": [count > 1], "both": [False, True] if count > 1 else [False]}
            chosen += [Config(count, rank, gated) for gated in ways[gates]]
    return chosen


def random_lora(spec, rank: int, seed: int) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
    """(layer, projection) -> (A (rank, in), B (out, rank)) in fp16, for every projection."""
    rng = np.random.default_rng(seed)
    lora = {}
    for layer in range(spec.config.n_layers):
        for projection in PROJECTIONS:
            out_dim, in_dim = spec.weights[f"blk.{layer}.{projection}.weight"].shape
            a = rng.standard_normal((rank, in_dim), np.float32) / np.sqrt(in_dim)
            b = rng.standard_normal((out_dim, rank), np.float32) * 0.01
            lora[layer, projection] = a.astype(np.float16), b.astype(np.float16)
    return lora


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's q/k row order to GGUF's (convert_hf_to_gguf.py's LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_peft(directory: Path, lora: dict, rank: int) -> None:
    directory.mkdir()
    tensors = {}
    for (layer, projection), (a, b) in lora.items():
        prefix = f"base_model.model.model.layers.{layer}.{PROJECTIONS[projection]}"
        tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"] = a, b
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": rank, "use_rslora": False, "use_dora": False,
              "target_modules": sorted(module.split(".")[1] for module in PROJECTIONS.values()),
              "task_type": "CAUSAL_LM"}
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))


def write_gguf_lora(path: Path, lora: dict, rank: int, config) -> None:
    writer = gguf.GGUFWriter(str(path), config.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    heads = {"attn_q": config.n_heads, "attn_k": config.n_kv_heads} if config.arch == "llama" else {}
    for (layer, projection), (a, b) in lora.items():
        if projection in heads:
            b = permute(b, heads[projection])
        writer.add_tensor(f"blk.{layer}.{projection}.weight.lora_a", a)
        writer.add_tensor(f"blk.{layer}.{projection}.weight.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def adapter_files(directory: Path, model, rank: int, index: int) -> AdapterFiles:
    """Adapter `index` of rank `rank` for model, written the first time, reused after."""
    cfg = model.config
    name = f"{model.name}-{cfg.n_layers}x{cfg.dim}-r{rank}-{index}"
    files = AdapterFiles(directory / name, directory / f"{name}.gguf")
    if files.peft.is_dir() and files.gguf.is_file():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    lora = random_lora(model.spec, rank, seed=1000 * rank + index)
    # written under other names and renamed, so that an interrupted run leaves nothing half made
    partial = AdapterFiles(directory / f"{name}.partial", directory / f"{name}.gguf.partial")
    shutil.rmtree(partial.peft, ignore_errors=True)
    write_peft(partial.peft, lora, rank)
    write_gguf_lora(partial.gguf, lora, rank, cfg)
    shutil.rmtree(files.peft, ignore_errors=True)
    partial.peft.rename(files.peft)
    partial.gguf.rename(files.gguf)
    return files


def model_path(name: str, synthetic: Path) -> Path:
    if name != SYNTHETIC:
        return resolve_model(name).resolve()
    if not synthetic.is_file():
        print(f"writing the synthetic 1B Q4_0 llama to {synthetic}", file=sys.stderr)
        synthetic.parent.mkdir(parents=True, exist_ok=True)
        partial = synthetic.with_name(synthetic.name + ".partial")
        made = subprocess.run([sys.executable, str(BENCH_DIR / "synthetic_gguf.py"), "--out", str(partial)],
                              capture_output=True, text=True)
        if made.returncode != 0:
            raise BenchError(f"synthetic_gguf.py failed: {made.stderr.strip()[-2000:]}")
        partial.rename(synthetic)
    return synthetic


class LilaEngine:
    """One model load, with adapters swapped in and out through its fabric."""

    def __init__(self, path: Path, fused: bool, args: argparse.Namespace):
        self.model = lila.load(path, threads=args.threads, n_ctx=args.n_prompt + args.n_gen,
                               max_batch=args.n_prompt, fuse_adapters=fused)
        self.checked: set[Config] = set()

    def run(self, config: Config, adapters: list[AdapterFiles], gates: list[np.ndarray],
            args: argparse.Namespace) -> dict[str, Any]:
        fabric = self.model.fabric
        for namespace, files, gate in zip(DEFAULT_NAMESPACES, adapters, gates):
            fabric.load(namespace, files.peft)
            if config.gated:
                fabric.set_gate(namespace, gate, 0.0)
        memory = fabric.memory
        try:
            if config not in self.checked:
                logits = self.model.backend.forward(np.arange(min(8, args.n_prompt)), 0)
                if not np.isfinite(logits).all():
                    raise BenchError(f"{self.model.name} with {config.label}: logits not finite")
                self.checked.add(config)
            result = measure(self.model.backend, self.model.config.vocab_size, args.n_prompt, args.n_gen, 1)
        finally:
            for namespace in DEFAULT_NAMESPACES[:len(adapters)]:
                fabric.unload(namespace)
        return {"pp": result["pp"], "tg": result["tg"], "memory": memory}

    def close(self) -> None:
        self.model.close()


class FloorEngine:
    """Per configuration, a synthetic model as many bytes bigger than the base as the
    adapters' stacked copies (written once, kept in the work directory)."""

    def __init__(self, path: Path, model, args: argparse.Namespace):
        self.path, self.base, self.args = path, model, args
        self.models: dict[int, Any] = {}       # extra bytes -> loaded model
        self.extra: dict[Config, int] = {}

    def extra_bytes(self, config: Config, adapters: list[AdapterFiles]) -> int:
        if config not in self.extra:
            self.extra[config] = self.stacked_bytes(adapters)
        return self.extra[config]

    def stacked_bytes(self, adapters: list[AdapterFiles]) -> int:
        if not adapters:
            return 0
        fabric = self.base.fabric
        for namespace, files in zip(DEFAULT_NAMESPACES, adapters):
            fabric.load(namespace, files.peft)
        try:
            return fabric.memory - sum(ns.memory for ns in fabric.namespaces if ns.loaded)
        finally:
            for namespace in DEFAULT_NAMESPACES[:len(adapters)]:
                fabric.unload(namespace)

    def run(self, config: Config, adapters: list[AdapterFiles], args: argparse.Namespace) -> dict[str, Any]:
        extra = self.extra_bytes(config, adapters)
        if extra not in self.models:
            self.models[extra] = lila.load(self.synthetic(extra), threads=args.threads,
                                           n_ctx=args.n_prompt + args.n_gen, max_batch=args.n_prompt)
        model = self.models[extra]
        result = measure(model.backend, model.config.vocab_size, args.n_prompt, args.n_gen, 1)
        return {"pp": result["pp"], "tg": result["tg"], "memory": extra}

    def synthetic(self, extra: int) -> Path:
        """The base's shapes and types, the FFN widened by at least `extra` bytes."""
        cfg, tensors = self.base.config, self.base.gguf.tensors
        layer_type, embed_type = tensors["blk.0.ffn_up.weight"].ggml_type, tensors["token_embd.weight"].ggml_type
        block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(layer_type))]
        per_ffn_unit = 3 * cfg.n_layers * cfg.dim // block * block_bytes   # gate, up and down
        units = -(-extra // per_ffn_unit)
        ffn = cfg.ffn_dim + -(-units // block) * block
        out = self.args.adapters.parent / "floor" / f"{self.base.name}-ffn{ffn}.gguf"
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        command = [sys.executable, str(BENCH_DIR / "synthetic_gguf.py"), "--out", str(partial),
                   "--type", layer_type.name.lower(), "--embed-type", embed_type.name.lower(),
                   "--tied" if "output.weight" not in tensors else "--no-tied",
                   "--dim", str(cfg.dim), "--layers", str(cfg.n_layers), "--ffn", str(ffn),
                   "--heads", str(cfg.n_heads), "--kv-heads", str(cfg.n_kv_heads),
                   "--head-dim", str(cfg.head_dim), "--tokenizer-from", str(self.path)]
        made = subprocess.run(command, capture_output=True, text=True)
        if made.returncode != 0:
            raise BenchError(f"synthetic_gguf.py failed: {made.stderr.strip()[-2000:]}")
        partial.rename(out)
        return out

    def close(self) -> None:
        for model in self.models.values():
            model.close()


def bench_model(name: str, args: argparse.Namespace, llama_python: Path | None) -> dict[str, Any]:
    path = model_path(name, args.synthetic)
    engines = {engine: LilaEngine(path, engine == "fused", args)
               for engine in args.engines if engine in ("fused", "split")}
    model = next(iter(engines.values())).model if engines else lila.load(path, threads=1, n_ctx=8, max_batch=8)
    floor = FloorEngine(path, model, args) if "floor" in args.engines else None
    try:
        chosen = configs(args.ranks, args.counts, args.gates)
        adapters = {rank: [adapter_files(args.adapters, model, rank, i) for i in range(max(args.counts))]
                    for rank in args.ranks}
        rng = np.random.default_rng(0)
        gates = [rng.normal(0, 0.02, model.config.dim).astype(np.float32) for _ in range(max(args.counts))]
        description = (f"{model.name} ({model.config.arch}, {model.config.n_layers} layers, dim "
                       f"{model.config.dim}, {model.gguf.file_size / 2**20:.0f} MB)")
        backends = {engine: f"lila {e.model.choice.name} backend" for engine, e in engines.items()}
        runs: dict[tuple[Config, str], list[dict[str, Any]]] = {}
        for rep in range(args.reps):
            for config in chosen:
                files = adapters[config.rank][:config.count] if config.count else []
                for engine in args.engines:
                    if engine == "llama.cpp":
                        run = run_llamacpp(llama_python, path, files, args)
                    elif engine == "floor":
                        run = floor.run(config, files, args)
                    else:
                        run = engines[engine].run(config, files, gates, args)
                    runs.setdefault((config, engine), []).append(run)
                    backends.setdefault(engine, run.get("backend"))
                    print(f"run {rep + 1}/{args.reps} {config.label:22} {engine:9}  pp {run['pp']:8.1f}  "
                          f"tg {run['tg']:7.1f} tok/s", file=sys.stderr)
    finally:
        if floor:
            floor.close()
        for engine in engines.values():
            engine.close()
        if not engines:
            model.close()
    return {"model": str(path), "description": description, "backends": backends,
            "rows": rows(chosen, args.engines, runs)}


def run_llamacpp(python: Path, path: Path, files: list[AdapterFiles], args: argparse.Namespace) -> dict[str, Any]:
    # seed 0: the same prompt tokens as lila.cli.bench.measure's
    run = run_llamacpp_python(python, path, args, seed=0, loras=[str(f.gguf) for f in files])
    return {"pp": run["pp"], "tg": run["tg"], "memory": sum(f.gguf.stat().st_size for f in files),
            "backend": run["backend"]}


def rows(chosen: list[Config], engines: list[str], runs: dict) -> list[dict[str, Any]]:
    table = []
    for config in chosen:
        for engine in engines:
            row: dict[str, Any] = {"adapters": config.count, "rank": config.rank, "gated": config.gated,
                                   "label": config.label, "engine": engine,
                                   "memory": runs[config, engine][-1]["memory"]}
            for key in ("pp", "tg"):
                values = [run[key] for run in runs[config, engine]]
                base = statistics.median(run[key] for run in runs[chosen[0], engine])
                row.update({key: statistics.median(values), f"{key}_runs": values,
                            f"{key}_x_base": statistics.median(values) / base})
            table.append(row)
    return table


def spread(row: dict[str, Any], key: str) -> str:
    values = row[f"{key}_runs"]
    return f"{row[key]:.1f} ({min(values):.1f}..{max(values):.1f})"


def print_table(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n{result['description']}\n{args.threads} threads, pp{args.n_prompt} tg{args.n_gen}, tok/s: median "
          f"(min..max) of {args.reps} interleaved runs; x base: ratio of medians to the engine's base")
    print("; ".join(f"{engine}: {backend}" for engine, backend in result["backends"].items()))
    print(f"{'adapters':22} {'engine':9} {'memory MB':>9}  {'prefill':>24} {'x base':>6}  {'decode':>22} {'x base':>6}")
    for row in result["rows"]:
        label = row["label"] if row["engine"] == args.engines[0] else ""
        print(f"{label:22} {row['engine']:9} {row['memory'] / 2**20:9.1f}  {spread(row, 'pp'):>24} "
              f"{row['pp_x_base']:6.2f}  {spread(row, 'tg'):>22} {row['tg_x_base']:6.2f}")
    others = [engine for engine in args.engines if engine != "fused"]
    if "fused" not in args.engines or not others:
        return
    print("\nfused / other engine, ratio of medians (above 1: fused is faster)")
    print(f"{'adapters':22} " + " ".join(f"{engine + ' pp':>13} {engine + ' tg':>13}" for engine in others))
    by_key = {(row["label"], row["engine"]): row for row in result["rows"]}
    for label in dict.fromkeys(row["label"] for row in result["rows"]):
        fused = by_key[label, "fused"]
        print(f"{label:22} " + " ".join(f"{fused['pp'] / by_key[label, e]['pp']:13.2f} "
                                        f"{fused['tg'] / by_key[label, e]['tg']:13.2f}" for e in others))


def numbers(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, not {text!r}")
    return values


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help=f"comma-separated: {SYNTHETIC}, smollm2, or GGUF paths or model "
                                         f"names (default: {DEFAULTS['models']})")
    parser.add_argument("--ranks", help=f"adapter ranks (default: {DEFAULTS['ranks']})")
    parser.add_argument("--counts", help=f"adapters at once, at most {len(DEFAULT_NAMESPACES)} "
                                         f"(default: {DEFAULTS['counts']})")
    parser.add_argument("--gates", choices=("multi", "none", "both"), default="multi",
                        help="gate runs of several adapters (multi), none, or run those both ways")
    parser.add_argument("--engines", default="fused,split", help=f"any of {', '.join(ENGINES)} (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine (default: %(default)s)")
    parser.add_argument("-p", "--n-prompt", type=int,
                        help=f"prompt tokens, one batch (default: {DEFAULTS['n_prompt']})")
    parser.add_argument("-n", "--n-gen", type=int, help=f"decoded tokens (default: {DEFAULTS['n_gen']})")
    parser.add_argument("-r", "--reps", type=int, help=f"interleaved repetitions (default: {DEFAULTS['reps']})")
    parser.add_argument("--quick", action="store_true",
                        help="defaults for a check that it all runs: "
                             + ", ".join(f"{key} {value}" for key, value in QUICK.items()))
    parser.add_argument("--synthetic", type=Path, default=WORK_DIR / "llama-1b-q4_0.gguf",
                        help=f"the {SYNTHETIC} model, written if missing (default: %(default)s)")
    parser.add_argument("--adapters", type=Path, default=WORK_DIR / "adapters",
                        help="where the random adapters are written and reused (default: %(default)s)")
    parser.add_argument("--llamacpp-python", type=Path, metavar="PATH",
                        help="a Python with llama_cpp (default: bench/.venv-llamacpp's, built if missing)")
    parser.add_argument("--json", action="store_true", help="last stdout line: the results as one JSON object")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.ranks, args.counts = numbers(args.ranks), numbers(args.counts)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    args.models = args.models.split(",")
    args.engines = args.engines.split(",")
    if not set(args.engines) <= set(ENGINES) or len(set(args.engines)) != len(args.engines):
        parser.error(f"--engines: distinct names among {', '.join(ENGINES)}, not {','.join(args.engines)}")
    if max(args.counts) > len(DEFAULT_NAMESPACES):
        parser.error(f"--counts: at most {len(DEFAULT_NAMESPACES)} adapters, one per namespace")
    for name in ("threads", "n_prompt", "n_gen", "reps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    try:
        llama_python = (llamacpp_python(args.llamacpp_python, LLAMACPP_PACKAGE)
                        if "llama.cpp" in args.engines else None)
        results = [bench_model(name, args, llama_python) for name in args.models]
    except (BenchError, LilaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for result in results:
        print_table(result, args)
    # this run's own threads count in it: well above --threads means other work shared the cores
    print(f"\n{time.monotonic() - started:.0f} s, load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        print(json.dumps({"threads": args.threads, "n_prompt": args.n_prompt, "n_gen": args.n_gen,
                          "reps": args.reps, "gates": args.gates, "engines": args.engines, "models": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
