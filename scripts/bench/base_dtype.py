"""What the frozen base costs under LoRA: an fp32 base, a bf16 base, and QLoRA's 4-bit NF4 base, in one run on this
machine.

The ~1B-parameter Llama-shaped model of scripts/bench/load.py (written once as a hub-style directory) is fine-tuned
for one step on 2 workers under DDP (QLoRA's strategy), micro batch 1 x 32 tokens, bf16 autocast in every run (the
compute dtype a bf16 base needs, and QLoRA's), three ways:

    LoRA, fp32 base    peft=lora peft.base_dtype=fp32
    LoRA, bf16 base    peft=lora (base_dtype=auto: bf16 under trainer.precision=bf16)
    QLoRA, NF4 base    peft=qlora: linear weights 4-bit, double-quantized scales; embeddings, head, norms in bf16

Measured per rank (summary.json): the frozen weights' bytes as the worker holds them (`frozen`: tensors and
quantization state), the resident set's peak while the model loads, and its peak while training (to the first
checkpoint). The resident peak while loading counts the pages of safetensors files that transformers maps (page cache
the kernel takes back under pressure), so the same load is also run alone in one process that samples its resident
set by kind (`load_alone_peak_mb`: anonymous memory, file pages). Beside them: the fit check's estimates for the
same config. Targets (the issue): QLoRA's base <= 0.3x the bf16 base; estimates within 25% of the measured peaks.

    python scripts/bench/base_dtype.py     # results/benchmarks/base_dtype.json + base_dtype.png (~20 min, 2 cores)
"""

from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import destination, machine, publish  # noqa: E402
from scripts.bench.load import SHAPE, arguments, bar_chart, measure  # noqa: E402

RUNS = {
    "LoRA, fp32 base": ["peft=lora", "peft.base_dtype=fp32"],
    "LoRA, bf16 base": ["peft=lora"],
    "QLoRA, NF4 base": ["peft=qlora"],
}


LOADERS = {"LoRA, fp32 base": "fp32", "LoRA, bf16 base": "bf16", "QLoRA, NF4 base": "qlora"}
# One process loads the base as the worker does while a thread samples its resident set by kind: anonymous memory
# (what the process holds) and file pages (safetensors files transformers maps: page cache the kernel can take back).
PROBE = """
import json, sys, threading, time
import torch
def status():
    out = {}
    for line in open("/proc/self/status"):
        key = line.split(":")[0]
        if key in ("RssAnon", "RssFile", "VmRSS"):
            out[key] = int(line.split()[1]) // 1024
    return out
peak, done = status(), threading.Event()
def sample():
    while not done.is_set():
        for key, value in status().items():
            peak[key] = max(peak[key], value)
        time.sleep(0.02)
before = status()
threading.Thread(target=sample, daemon=True).start()
path, kind = sys.argv[1], sys.argv[2]
if kind == "qlora":
    from rtune.model import load_quantized
    model = load_quantized(path, torch.bfloat16, "cpu")
else:
    from transformers import AutoModelForCausalLM
    from rtune.model import cast_frozen
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").requires_grad_(False)
    if kind == "bf16":
        cast_frozen(model, torch.bfloat16)
for param in model.parameters():  # read every weight once, as training does (a mapped file is read lazily)
    param.data.sum()
done.set()
time.sleep(0.05)
print(json.dumps({"before_anon": before["RssAnon"], "anon": peak["RssAnon"], "file": peak["RssFile"],
                  "resident": peak["VmRSS"], "after_resident": status()["VmRSS"]}))
"""


def load_split(model_dir: str, kind: str) -> dict:
    """Peak MB by kind while one process loads the base the way a worker does (outside Ray)."""
    import json
    import subprocess

    proc = subprocess.run([sys.executable, "-c", PROBE, model_dir, kind], capture_output=True, text=True, check=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from rtune.fit import GB

    args, quick = arguments(__doc__, "base_dtype.json")
    common = ["peft.target_modules=all-linear", "strategy=ddp", "num_workers=2", "trainer.precision=bf16",
              "data.seq_len=32", "trainer.micro_batch_size=1", "trainer.max_steps=1", "trainer.eval_every_steps=1",
              "trainer.eval_max_batches=1", "trainer.checkpoint_every_steps=1", "trainer.log_every_steps=1"]
    rows = []
    for name, summary, estimate, model in measure(RUNS, common, args.layers):
        load = summary["load_rss_mb_per_worker"]
        split = load_split(model, LOADERS[name])
        rows.append({
            "run": name, "params": summary["total_params"], "trainable_params": summary["trainable_params"],
            "frozen_mb_per_rank": [w["frozen"] for w in load],
            "load_peak_mb_per_rank": [w["peak"] for w in load],
            "load_alone_peak_mb": split,
            "train_peak_mb_per_rank": summary["train_peak_rss_mb_per_worker"],
            "estimate_loading_mb": round(estimate.loading / 2 ** 20),
            "estimate_training_mb": round(sum(estimate.parts.values()) / 2 ** 20),
            "estimate_parts_gb": {k: round(v / GB, 3) for k, v in estimate.parts.items()},
            "wall_s": summary["wall_s"]})
        print(rows[-1], flush=True)
    by_run = {r["run"]: r for r in rows}
    bf16 = max(by_run["LoRA, bf16 base"]["frozen_mb_per_rank"])
    for row in rows:
        row["frozen_vs_bf16_base"] = round(max(row["frozen_mb_per_rank"]) / bf16, 3)
        row["training_estimate_error"] = round(row["estimate_training_mb"] / max(row["train_peak_mb_per_rank"]) - 1, 3)
        row["loading_estimate_error"] = round(row["estimate_loading_mb"] / max(row["load_peak_mb_per_rank"]) - 1, 3)
    report = {"benchmark": "base_dtype", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "model": {**SHAPE, "num_hidden_layers": args.layers, "vocab": "BPE 8k"},
              "what": "per-rank memory of LoRA's frozen base (fp32, bf16, QLoRA's NF4) under DDP on 2 workers: the "
                      "frozen weights' bytes, the resident peaks while loading and training; the fit check's "
                      "estimates beside them",
              "rows": rows}
    path = publish(report, args.out, quick)
    plot(report, os.path.splitext(destination(path, quick))[0] + ".png")


def plot(report: dict, out_png: str) -> None:
    rows = report["rows"]

    def ratios(ax, xs):  # over the frozen-base bars
        for x, row in zip(xs, rows):
            ax.annotate(f"{row['frozen_vs_bf16_base']:.2f}x", (x, max(row["frozen_mb_per_rank"]) / 1024),
                        ha="center", va="bottom", fontsize=7)

    bar_chart(rows, [("frozen base (tensor bytes)", [max(r["frozen_mb_per_rank"]) for r in rows]),
                     ("load: peak resident (max rank)", [max(r["load_peak_mb_per_rank"]) for r in rows]),
                     ("training: peak resident (max rank)", [max(r["train_peak_mb_per_rank"]) for r in rows]),
                     ("fit check: training estimate", [r["estimate_training_mb"] for r in rows])],
              f"LoRA's frozen base, {rows[0]['params'] / 1e9:.2f}B parameters, DDP on 2 workers, "
              f"{report['machine']['cores']}-core CPU (labels: frozen base vs the bf16 one)", out_png, ratios)


if __name__ == "__main__":
    main()
