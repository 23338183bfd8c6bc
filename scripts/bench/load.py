"""Loading a model larger than a worker should hold: each FSDP2 rank's resident memory while the model is loaded and
while it trains, in one run on this machine.

A ~1B-parameter Llama-shaped model (hidden 2048, 22 layers, GQA 16/4 heads, SwiGLU 5632, random weights) is written
once as a hub-style directory (safetensors in 1 GB files, a BPE tokenizer), then fine-tuned with LoRA for 2 steps on
2 workers (FSDP2, micro batch 1 x 64 tokens), three ways:

    whole,   fp32 base   strategy.fsdp_load=whole: every rank builds the whole model, then shards it (the old way)
    sharded, fp32 base   built on the meta device, sharded, each rank reads only its rows of each tensor
    sharded, bf16 base   the same with the frozen base in bf16 (trainer.precision=bf16, peft.base_dtype=auto)

Measured per rank (summary.json): the resident set's growth while the model is built and sharded (`load`: its peak
minus the resident set before), and the peak while training (VmHWM from after the build to the first checkpoint).
Beside each: rtune's fit-check estimate for the same config. Targets (the issue): load ≤ 0.6x the model's fp32
bytes per rank; estimates within 25% of the measured peaks.

    python scripts/bench/load.py            # results/benchmarks/load.json + load.png (~15 min on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import BENCHMARKS, destination, machine, publish  # noqa: E402

SHAPE = dict(model_type="llama", hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
             num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=False)
RUNS = {
    "whole, fp32 base": ["strategy.fsdp_load=whole"],
    "sharded, fp32 base": [],
    "sharded, bf16 base": ["trainer.precision=bf16"],
}


def build(out: str, layers: int) -> str:
    """The model directory: random weights from config, a BPE trained on the bundled Rust sample."""
    import datasets
    import torch
    from transformers import AutoConfig

    from rtune.model import train_bpe_tokenizer
    from rtune.model_init import init_from_config

    texts = datasets.load_dataset(os.path.join(ROOT, "rtune", "sample_data", "rust_sample"), data_dir="data/rust",
                                  split="train")["content"]
    path = os.path.join(out, "llama-1b")
    tokenizer = train_bpe_tokenizer(iter(texts), 8192, path)
    config = AutoConfig.for_model(**{**SHAPE, "num_hidden_layers": layers}, vocab_size=len(tokenizer),
                                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    init_from_config(config).save_pretrained(path, max_shard_size="1GB")
    tokenizer.save_pretrained(path)
    return path


def arguments(doc: str, default_out: str):
    """(the parsed arguments, whether this is a quick look) for a benchmark over the 1B model."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--layers", type=int, default=SHAPE["num_hidden_layers"], help="fewer: a quick look")
    parser.add_argument("--out", default=os.path.join(BENCHMARKS, default_out))
    args = parser.parse_args()
    return args, args.layers != SHAPE["num_hidden_layers"]


def measure(runs: dict, common: list, layers: int):
    """Each run (name -> overrides, after `common`) on the model directory, one after another on a local Ray: yields
    (name, summary, the fit check's estimate for the same config, the model directory)."""
    os.environ.setdefault("RTUNE_WORKER_LOGS", "0")
    from rtune.compose import compose_config
    from rtune.driver.cluster import init_local_ray
    from rtune.driver.launch import train
    from rtune.driver.preflight import model_config_checked
    from rtune.fit import assess

    work = tempfile.mkdtemp(prefix="rtune-bench-load-")
    model = build(work, layers)
    init_local_ray(num_cpus=os.cpu_count() or 2)
    for i, (name, extra) in enumerate(runs.items()):
        cfg = compose_config([f"model.name_or_path={model}", *common, "trainer.skip_fit_check=true",
                              f"storage_path={work}", f"run_name=run-{i}", *extra])
        summary = train(cfg)
        yield name, summary, assess(cfg, model_config_checked(cfg), local_cluster=True).estimate, model


def main() -> None:
    from rtune.fit import GB

    args, quick = arguments(__doc__, "load.json")
    common = ["peft=lora", "strategy=fsdp", "num_workers=2", "data.seq_len=64", "trainer.micro_batch_size=1",
              "trainer.max_steps=2", "trainer.eval_every_steps=2", "trainer.eval_max_batches=1",
              "trainer.checkpoint_every_steps=2", "trainer.log_every_steps=1"]
    rows = []
    for name, summary, estimate, _ in measure(RUNS, common, args.layers):
        fp32_mb = 4 * summary["total_params"] / 2 ** 20
        load = summary["load_rss_mb_per_worker"]
        rows.append({
            "run": name, "params": summary["total_params"], "model_fp32_mb": round(fp32_mb),
            "load_growth_mb_per_rank": [w["peak"] - w["before"] for w in load],
            "load_peak_mb_per_rank": [w["peak"] for w in load],
            "load_growth_vs_fp32_model": round(max(w["peak"] - w["before"] for w in load) / fp32_mb, 3),
            "train_peak_mb_per_rank": summary["train_peak_rss_mb_per_worker"],
            "estimate_loading_mb": round(estimate.loading / 2 ** 20),
            "estimate_training_mb": round(sum(estimate.parts.values()) / 2 ** 20),
            "estimate_parts_gb": {k: round(v / GB, 3) for k, v in estimate.parts.items()}})
        print(rows[-1], flush=True)
    for row in rows:
        row["training_estimate_error"] = round(row["estimate_training_mb"] / max(row["train_peak_mb_per_rank"]) - 1, 3)
        row["loading_estimate_error"] = round(row["estimate_loading_mb"] / max(row["load_peak_mb_per_rank"]) - 1, 3)
    report = {"benchmark": "load", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "model": {**SHAPE, "num_hidden_layers": args.layers, "vocab": "BPE 8k"},
              "what": "per-rank resident memory, FSDP2 + LoRA on 2 workers: growth while building and sharding, "
                      "peak while training; the fit check's estimates beside them",
              "rows": rows}
    path = publish(report, args.out, quick)
    plot(report, os.path.splitext(destination(path, quick))[0] + ".png")


def bar_chart(rows: list, series: list, title: str, out_png: str, decorate=None) -> None:
    """Grouped bars, GB per rank: one group a run, one bar a (label, MB values) series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    xs = range(len(rows))
    width = 0.8 / (len(series) + 1)
    offset = (len(series) - 1) / 2
    for i, (label, values) in enumerate(series):
        ax.bar([x + (i - offset) * width for x in xs], [v / 1024 for v in values], width, label=label)
    if decorate:
        decorate(ax, [x - offset * width for x in xs])
    ax.set_xticks(list(xs), [r["run"] for r in rows])
    ax.set_ylabel("GB per rank")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def plot(report: dict, out_png: str) -> None:
    rows = report["rows"]
    fp32 = rows[0]["model_fp32_mb"] / 1024

    def targets(ax, _):
        ax.axhline(fp32, color="k", ls="--", lw=1, label=f"the model in fp32 ({fp32:.1f} GB)")
        ax.axhline(0.6 * fp32, color="g", ls=":", lw=1, label="target for load: 0.6x")

    bar_chart(rows, [("load: growth (max rank)", [max(r["load_growth_mb_per_rank"]) for r in rows]),
                     ("training: peak (max rank)", [max(r["train_peak_mb_per_rank"]) for r in rows]),
                     ("fit check: training estimate", [r["estimate_training_mb"] for r in rows])],
              f"FSDP2 + LoRA, {rows[0]['params'] / 1e9:.2f}B parameters, 2 workers, "
              f"{report['machine']['cores']}-core CPU", out_png, targets)


if __name__ == "__main__":
    main()
