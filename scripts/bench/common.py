"""What every benchmark under scripts/bench/ shares: the repository root, the model shapes more than one of them
trains, one `machine` record, the median over interleaved rounds, and the one place that decides where a
benchmark's figures go.

Committed figures live in results/benchmarks/ and only a measurement writes there. A smoke run (`--quick`) or
any run its script does not count as a measurement (a partial one) writes under results/smoke/ instead
(git-ignored, as is everything under results/ but results/benchmarks/): see `destination`.

Each benchmark imports this module one way, run from anywhere:

    ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, ROOT)
    from scripts.bench.common import ...  # noqa: E402
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(ROOT, "results", "benchmarks")  # committed figures: measurements only
SMOKE = os.path.join(ROOT, "results", "smoke")  # smoke and partial runs (git-ignored)

# GPT-2 architecture built from config: the GPT-2-small shape (12 x 768), and a tiny one (2 x 64) for smoke runs
GPT2_SMALL = ["model.from_config.n_layer=12", "model.from_config.n_embd=768", "model.from_config.n_head=12"]
GPT2_TINY = ["model.from_config.n_layer=2", "model.from_config.n_embd=64", "model.from_config.n_head=2"]


def machine() -> dict:
    """The machine a benchmark ran on: one record shape for every benchmark (null where unknown)."""
    import torch

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:  # not Linux
        pass
    return {"cpu": cpu or platform.processor() or None, "cores": os.cpu_count(), "arch": platform.machine() or None,
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def median_of(runs: list[dict]) -> dict:
    """One system over its rounds: the median of each figure, and every round's figures under `runs`."""
    if len(runs) == 1:
        return runs[0]
    out = {}
    for key, first in runs[0].items():
        if isinstance(first, (int, float)):
            out[key] = round(statistics.median(r[key] for r in runs), 3)
        elif isinstance(first, list):  # per process: the median of each process over the rounds
            out[key] = [round(statistics.median(r[key][i] for r in runs)) for i in range(len(first))]
    return {**out, "runs": runs}


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def destination(out: str, smoke: bool) -> str:
    """Where a benchmark writes its JSON (its plots go beside it): the one place that decides.

    A measurement writes to `out` (each script's default: results/benchmarks/<its name>.json). A smoke or partial
    run (smoke=True) never writes under results/benchmarks/: an `out` there becomes results/smoke/<same file name>;
    an `out` elsewhere (a test's temporary folder) is kept."""
    path = os.path.abspath(out)
    if smoke and _inside(path, BENCHMARKS):
        path = os.path.join(SMOKE, os.path.basename(path))
        print(f"not a measurement: writing {os.path.relpath(path, ROOT)} (results/benchmarks/ keeps measurements)",
              file=sys.stderr)
    return path


def write_json(report: dict, out: str, smoke: bool) -> str:
    """Write the report where `destination` says; returns the path written (for a plot beside it)."""
    path = destination(out, smoke)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    return path


def publish(report: dict, out: str, smoke: bool) -> str:
    """Print the report and write it: a measurement to `out`, where the committed figures live; a smoke or partial
    run (--quick, one mode of two, ...) under results/smoke/, never over a committed figure. Returns the path."""
    print(json.dumps(report, indent=2))
    return write_json(report, out, smoke)


def make_corpus(out_dir: str, total_mb: int, file_mb: int = 10) -> int:
    """JSON-lines files of ~file_mb of Rust documents: the bundled sample's files with renamed identifiers
    and shuffled blocks, so no two documents are the same. Returns the bytes written."""
    import datasets

    base = datasets.load_dataset(os.path.join(ROOT, "rtune", "sample_data", "rust_sample"), data_dir="data/rust",
                                 split="train")["content"]
    blocks = [b for doc in base for b in doc.split("\n\n") if b.strip()]
    rng = np.random.default_rng(0)
    os.makedirs(out_dir, exist_ok=True)
    written, index = 0, 0
    while written < total_mb * 2**20:
        size, path = 0, os.path.join(out_dir, f"train-{index:05d}.jsonl")
        with open(path, "w") as f:
            while size < min(file_mb, total_mb) * 2**20:
                picked = rng.choice(len(blocks), size=int(rng.integers(4, 24)))
                suffix = f"_{int(rng.integers(1e6))}"
                text = "\n\n".join(blocks[i] for i in picked).replace("fn ", f"fn x{suffix}").replace(
                    "struct ", f"struct S{suffix}")
                line = json.dumps({"content": text, "size": len(text)}) + "\n"
                f.write(line)
                size += len(line)
        written += size
        index += 1
    return written
