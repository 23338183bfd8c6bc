"""Training stall per checkpoint: trainer.checkpoint_upload=sync vs async, in one run of this script.

    python scripts/bench/checkpoint.py            # ~100M GPT-2-shaped model, 2 CPU workers (~3.5 min here)
    python scripts/bench/checkpoint.py --quick    # a small model, for a smoke test (writes under results/smoke/)

Each mode trains the same run (checkpoint every 3 steps, every step logged). The stall of a checkpoint
is the time from its step's record (written after the evaluation, before the checkpoint) to the next
step's, minus the median time between two plain steps. The time lost per checkpoint also counts the slower
plain steps while a background writer shares the CPU (see time_lost). Writes
results/benchmarks/checkpoint_stall.json and .png; --quick, or one mode alone (not a measurement), writes
under results/smoke/ instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import GPT2_SMALL, GPT2_TINY, machine, publish  # noqa: E402


def run(mode: str, args) -> dict:
    storage = tempfile.mkdtemp(prefix="rtune-bench-ckpt-")
    every = 3
    cmd = [sys.executable, "-m", "rtune", "train", *(GPT2_TINY if args.quick else GPT2_SMALL), "num_workers=2",
           f"storage_path={storage}", "run_name=ckpt", f"trainer.max_steps={args.steps}",
           f"trainer.checkpoint_every_steps={every}", f"trainer.eval_every_steps={every}",
           "trainer.eval_max_batches=1", "trainer.log_every_steps=1", "trainer.micro_batch_size=1",
           "data.seq_len=128", f"trainer.checkpoint_upload={mode}", "tracking.backends=[]"]
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - t0
    times = {r["step"]: r["time"] for r in map(json.loads, open(os.path.join(storage, "ckpt", "metrics.jsonl")))
             if "loss" in r}
    steps = sorted(times)
    checkpoint_steps = [s for s in steps if s % every == 0 and s + 1 in times]
    plain = [times[s + 1] - times[s] for s in steps if s + 1 in times and s % every and s > 1]
    step_s = statistics.median(plain)
    stalls = [times[s + 1] - times[s] - step_s for s in checkpoint_steps]
    newest = os.path.join(storage, "ckpt", f"checkpoint_{steps[-1]:08d}")
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(newest) for f in files)
    with open(os.path.join(storage, "ckpt", "summary.json")) as f:
        params = json.load(f)["total_params"]
    shutil.rmtree(storage, ignore_errors=True)
    return {"stall_s_per_checkpoint": [round(x, 3) for x in stalls],
            "median_stall_s": round(statistics.median(stalls), 3), "median_step_s": round(step_s, 3),
            "checkpoint_mb": round(size / 2**20, 1), "params": params, "wall_s": round(wall, 1),
            # for time_lost_s_per_checkpoint: from step 2's record to the last one, checkpoints included
            "steps_after_2": steps[-1] - 2, "steps_after_2_s": round(times[steps[-1]] - times[2], 3),
            "checkpoints_after_2": len(checkpoint_steps)}


def time_lost(results: dict) -> None:
    """What a checkpoint costs training in all, stall or not: a background writer also slows the plain steps
    after it (it shares the CPU), which the stall, measured against the run's own plain steps, does not show.
    Per mode: (time from step 2 to the end - as many plain steps of the sync run, which has no writer running
    between checkpoints) / checkpoints."""
    plain_s = results["sync"]["median_step_s"]
    for r in results.values():
        lost = r["steps_after_2_s"] - r["steps_after_2"] * plain_s
        r["time_lost_s_per_checkpoint"] = round(lost / r["checkpoints_after_2"], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=25, help="25: 8 checkpoints per mode")
    parser.add_argument("--modes", nargs="+", choices=("sync", "async"), default=["sync", "async"],
                        help="one mode alone is for experiments: the committed figure needs both, from one run")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "benchmarks", "checkpoint_stall.json"))
    args = parser.parse_args()
    results = {mode: run(mode, args) for mode in args.modes}
    report = {
        "what": "training stall per checkpoint (2 DDP workers on CPU, local storage): time from a checkpoint "
                "step's record to the next step's, minus the median plain step; sync vs async upload",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, **results,
    }
    if len(results) == 2:
        time_lost(results)
        for name, key in (("stall", "median_stall_s"), ("time_lost", "time_lost_s_per_checkpoint")):
            report[f"{name}_ratio_sync_over_async"] = round(results["sync"][key] / max(results["async"][key], 1e-3), 2)
    partial = args.quick or len(results) < 2  # not a measurement: under results/smoke/
    out = publish(report, args.out, partial)
    if len(results) == 2:
        plot(report, os.path.splitext(out)[0] + ".png")


def plot(report: dict, path: str) -> None:
    """Stall of every checkpoint, sync beside async, with each mode's median."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for offset, (mode, color) in zip((-0.2, 0.2), (("sync", "tab:red"), ("async", "tab:blue"))):
        stalls = report[mode]["stall_s_per_checkpoint"]
        ax.bar([i + 1 + offset for i in range(len(stalls))], stalls, width=0.4, color=color,
               label=f"{mode}: median {report[mode]['median_stall_s']:.2f} s")
    ax.set_xlabel("checkpoint (every 3 steps)")
    ax.set_ylabel("training stall (s)")
    ax.set_title(f"Stall per ~{report['sync']['checkpoint_mb'] / 1024:.0f} GB checkpoint, "
                 f"{report['sync']['params'] / 1e6:.0f}M params, 2 DDP workers on {report['machine']['cores']} CPUs "
                 f"({report['date']})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
