"""Peak memory per worker and trainable parameters: full DDP, LoRA, ZeRO-2, ZeRO-3, FSDP2.

    python scripts/bench/strategies.py              # GPT-2-small shape (12 x 768), 2 CPU workers, ~8 min
    python scripts/bench/strategies.py --quick      # a 4 x 256 model, for a smoke test (writes under results/smoke/)

Same model (GPT-2 architecture built from config, random init), same data, micro batch, sequence
length and step count for every strategy; only `strategy=` / `peft=` change. Each worker reports two
peaks of its resident set: while training (the high-water mark is reset after the model is built and
wrapped, and read before the first checkpoint is written) and over the whole run (model build and
checkpoint consolidation included). Both include the Python/torch/Ray runtime (~0.6 GB a process).
Writes results/benchmarks/strategies.json and prints a Markdown table.
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
from scripts.bench.common import GPT2_SMALL, machine, write_json  # noqa: E402

ROWS = [
    ("full (DDP)", []),
    ("LoRA r=8 (DDP)", ["peft=lora"]),
    ("ZeRO-2", ["strategy=deepspeed", "strategy.zero_stage=2"]),
    ("ZeRO-3", ["strategy=deepspeed", "strategy.zero_stage=3"]),
    ("FSDP2", ["strategy=fsdp"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "benchmarks", "strategies.json"))
    args = parser.parse_args()

    import ray

    from rtune.compose import compose_config
    from rtune.driver.cluster import init_local_ray
    from rtune.driver.launch import train

    shape = (["model.from_config.n_layer=4", "model.from_config.n_embd=256", "model.from_config.n_head=4"]
             if args.quick else GPT2_SMALL)
    common = [*shape, "num_workers=2", "data.seq_len=128", "trainer.micro_batch_size=4", "trainer.max_steps=6",
              "trainer.eval_every_steps=6", "trainer.checkpoint_every_steps=6", "trainer.eval_max_batches=1",
              "trainer.log_every_steps=1", "optim.warmup_steps=1"]
    storage = tempfile.mkdtemp(prefix="rtune-bench-strategies-")
    init_local_ray(num_cpus=2, log_to_driver=False)
    rows = []
    try:
        for label, extra in ROWS:
            cfg = compose_config([f"storage_path={storage}", f"run_name=s{len(rows)}", *common, *extra])
            started = time.perf_counter()
            summary = train(cfg)
            rows.append({"strategy": label, "overrides": extra, "trainable_params": summary["trainable_params"],
                         "total_params": summary["total_params"],
                         "trainable_share": summary["trainable_params"] / summary["total_params"],
                         "train_peak_rss_mb_per_worker": summary["train_peak_rss_mb_per_worker"],
                         "run_peak_rss_mb_per_worker": summary["peak_rss_mb_per_worker"],
                         "steady_tokens_per_s": summary["steady_tokens_per_s"], "eval_loss": summary["eval_loss"],
                         "wall_s": round(time.perf_counter() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        ray.shutdown()
    report = {
        "what": "peak RSS per Ray Train worker and trainable parameters, one model, same batch, 6 steps",
        "model": " ".join(shape) + " (GPT-2 architecture from config)",
        "batch": "2 workers x micro_batch_size 4 x seq_len 128, fp32, CPU (gloo)",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    write_json(report, args.out, smoke=args.quick)
    print("\n| strategy | trainable params | share | peak RSS while training, per worker (MB) "
          "| whole-run peak RSS per worker (MB) | tokens/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['strategy']} | {r['trainable_params']:,} | {100 * r['trainable_share']:.2f}% | "
              f"{' / '.join(map(str, r['train_peak_rss_mb_per_worker']))} | "
              f"{' / '.join(map(str, r['run_peak_rss_mb_per_worker']))} | {r['steady_tokens_per_s'] or 0:,.0f} |")


if __name__ == "__main__":
    main()
