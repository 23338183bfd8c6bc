"""DPO's reference model three ways: peak memory per worker and step time, one model, 2 workers.

    precompute  full fine-tune; one pass of the initial model before step 1, log-probs looked up after
    live        full fine-tune; a frozen copy of the initial model runs forward on every micro-batch
    lora        LoRA; the reference is the policy with its adapters disabled (no second copy)

Same model (Llama-shaped, ~25M parameters, built from config), same pairs (data=rust_preference),
same steps, DDP with 2 workers x 1 CPU, fp32. Measured: each worker's peak resident memory over the
training steps (train_peak_rss_mb_per_worker), steady seconds per optimizer step (median, first two
left out), and the time from launch to the end of step 1 (the precompute pass lands there; Ray is
already up for all three).

    python scripts/bench/preference.py     # writes results/benchmarks/preference.json and preference.png
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

OUT = os.path.join(ROOT, "results", "benchmarks", "preference.json")
MODEL = ("++model.from_config={model_type: llama, hidden_size: 512, intermediate_size: 1376, num_hidden_layers: 6, "
         "num_attention_heads: 8, num_key_value_heads: 4, max_position_embeddings: 512, tie_word_embeddings: false}")
MODES = {"precompute": ["objective.reference=precompute"], "live": ["objective.reference=live"],
         "lora": ["peft=lora"]}
STEPS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()

    from rtune.compose import compose_config
    from rtune.driver.cluster import init_local_ray
    from rtune.driver.launch import train
    from rtune.metrics import read_metrics

    init_local_ray(num_cpus=os.cpu_count() or 2)
    storage = tempfile.mkdtemp(prefix="rtune-pref-")
    cache = tempfile.mkdtemp(prefix="rtune-pref-cache-")  # a cold reference cache: the pass is measured
    rows = []
    for mode, extra in MODES.items():
        cfg = compose_config([MODEL, "objective=dpo", "data=rust_preference", f"storage_path={storage}",
                              f"run_name=dpo-{mode}", f"data.cache_dir={cache}", "num_workers=2",
                              "trainer.micro_batch_size=2", f"trainer.max_steps={STEPS}", "trainer.log_every_steps=1",
                              f"trainer.eval_every_steps={STEPS}", "trainer.eval_max_batches=2",
                              f"trainer.checkpoint_every_steps={STEPS}", "optim.warmup_steps=2", *extra])
        started = time.time()
        summary = train(cfg)
        records = read_metrics(os.path.join(summary["run_dir"], "metrics.jsonl"))
        steps = [r for r in records if "loss" in r]
        step_s = [(b["time"] - a["time"]) for a, b in zip(steps[2:], steps[3:])]  # steady: skip the first two
        row = {"reference": mode, "trainable_params": summary["trainable_params"],
               "total_params": summary["total_params"],
               "train_peak_rss_mb_per_worker": summary["train_peak_rss_mb_per_worker"],
               "seconds_per_step": round(sorted(step_s)[len(step_s) // 2], 3),
               "launch_to_step1_s": round(steps[0]["time"] - started, 1),
               "eval_reward_accuracy": [r for r in records if "eval_reward_accuracy" in r][-1]["eval_reward_accuracy"],
               "wall_s": round(time.time() - started, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"what": __doc__.split("\n\n")[2].replace("\n", " "), "machine": machine(),
              "date": time.strftime("%Y-%m-%d"), "steps": STEPS, "rows": rows}
    out = write_json(result, args.out, smoke=False)
    plot(rows, os.path.splitext(out)[0] + ".png")
    print("| reference | trainable params | peak RSS per worker (MB) | s / step | launch -> step 1 (s) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['reference']} | {r['trainable_params']:,} | {max(r['train_peak_rss_mb_per_worker']):,} | "
              f"{r['seconds_per_step']:.2f} | {r['launch_to_step1_s']} |")


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=110)
    names = [r["reference"] for r in rows]
    left.bar(names, [max(r["train_peak_rss_mb_per_worker"]) for r in rows], color="tab:blue")
    left.set_ylabel("peak RSS per worker (MB)")
    right.bar(names, [r["seconds_per_step"] for r in rows], color="tab:orange")
    right.set_ylabel("seconds per optimizer step")
    fig.suptitle("DPO reference: precompute vs live vs LoRA (2 CPU workers, ~25M params)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
