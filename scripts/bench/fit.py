"""Validate the fit check: its estimate of peak memory per worker vs the peak measured in training.

Two ~100M-parameter models built from config, a Llama-shaped one (hidden 768, 16 layers, 12 query / 4
key-value heads, SwiGLU 2048, untied) and a GPT-2-shaped one (768, 12 layers, tied), train for a few steps
with 2 workers on this machine's CPU under each strategy.
The measured figure is each worker's peak resident memory over the training steps (VmHWM from after
the model is built until the first checkpoint is written: what `train_peak_rss_mb_per_worker` in
summary.json reports), the larger of the two ranks; the estimate is `rtune.fit.estimate` for the same
config. Target: within 25% for every strategy.

    python scripts/bench/fit.py            # writes results/benchmarks/fit_check.json (~20 min on 2 cores)
    python scripts/bench/fit.py --only fsdp --models gpt2-87M   # a subset: writes under results/smoke/
                                                                # unless --out names a file
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import machine, write_json  # noqa: E402

OUT = os.path.join(ROOT, "results", "benchmarks", "fit_check.json")

MODELS = {
    "llama-104M": ["++model.from_config={model_type: llama, hidden_size: 768, intermediate_size: 2048, "
                   "num_hidden_layers: 16, num_attention_heads: 12, num_key_value_heads: 4, "
                   "max_position_embeddings: 512, tie_word_embeddings: false}"],
    "gpt2-87M": ["++model.from_config={model_type: gpt2, n_embd: 768, n_layer: 12, n_head: 12, n_positions: 512}"],
}
STRATEGIES = {
    "ddp": [],
    "ddp + gradient checkpointing": ["trainer.gradient_checkpointing=true"],
    "fsdp": ["strategy=fsdp"],
    "zero2": ["strategy=deepspeed", "strategy.zero_stage=2"],
    "zero3": ["strategy=deepspeed", "strategy.zero_stage=3"],
    "lora (ddp)": ["peft=lora"],
    "lora + fsdp": ["peft=lora", "strategy=fsdp"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="strategies to run (default: all)")
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="model shapes (default: all)")
    parser.add_argument("--out", help=f"default: {os.path.relpath(OUT, ROOT)} (a subset: under results/smoke/)")
    args = parser.parse_args()
    os.environ.setdefault("RTUNE_WORKER_LOGS", "0")
    from rtune.compose import compose_config
    from rtune.driver.cluster import init_local_ray
    from rtune.driver.launch import train
    from rtune.fit import GB, estimate, model_shape
    from rtune.model import load_model_config

    init_local_ray(num_cpus=os.cpu_count() or 2)
    rows = []
    storage = tempfile.mkdtemp(prefix="rtune-fit-")
    runs = [(m, s) for m in args.models for s in STRATEGIES if not args.only or s in args.only]
    for model_name, name in runs:
        extra = STRATEGIES[name]
        cfg = compose_config([*MODELS[model_name], f"storage_path={storage}", f"run_name=fit-{len(rows)}",
                              "num_workers=2",
                              "data.seq_len=128", "trainer.micro_batch_size=4", "trainer.max_steps=3",
                              "trainer.eval_every_steps=3", "trainer.eval_max_batches=1",
                              "trainer.checkpoint_every_steps=3", "trainer.log_every_steps=1", *extra])
        started = time.time()
        summary = train(cfg)
        model_config = load_model_config(cfg.model)
        model_config.vocab_size = summary_vocab(summary)
        est = estimate(cfg, model_shape(cfg, model_config), "cpu")
        measured = max(summary["train_peak_rss_mb_per_worker"]) / 1024
        row = {"model": model_name, "strategy": name, "params": summary["total_params"],
               "trainable": summary["trainable_params"], "estimate_gb": round(est.total / GB, 3),
               "measured_gb": round(measured, 3), "error": round(est.total / GB / measured - 1, 3),
               "parts_gb": {k: round(v / GB, 3) for k, v in est.parts.items()},
               "measured_per_worker_mb": summary["train_peak_rss_mb_per_worker"],
               "wall_s": round(time.time() - started)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "what": "peak resident memory per worker during training (max over 2 ranks) vs rtune.fit.estimate; "
                "models built from config (Llama- and GPT-2-shaped), micro batch 4 x 128 tokens, fp32, "
                "2 workers x 1 CPU",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"), "target": "|error| <= 0.25", "rows": rows,
        "all_within_25_percent": all(abs(r["error"]) <= 0.25 for r in rows),
    }
    subset = len(runs) < len(MODELS) * len(STRATEGIES)  # not the committed table: under results/smoke/
    write_json(result, args.out or OUT, smoke=subset and not args.out)
    print("| model | strategy | parameters (trainable) | estimate GB | measured GB | error |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['strategy']} | {r['params'] / 1e6:.0f}M ({r['trainable'] / 1e6:.2f}M) | "
              f"{r['estimate_gb']:.2f} | {r['measured_gb']:.2f} | {100 * r['error']:+.0f}% |")


def summary_vocab(summary: dict) -> int:
    """The run's vocabulary (its BPE tokenizer), read back from the checkpoint's config."""
    path = os.path.join(summary["latest_checkpoint"], "config.json")
    if not os.path.exists(path):
        path = os.path.join(summary["latest_checkpoint"], "base_model", "config.json")
    with open(path) as f:
        return json.load(f)["vocab_size"]


if __name__ == "__main__":
    main()
