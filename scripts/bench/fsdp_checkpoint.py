"""Memory a checkpoint adds to each FSDP2 rank: strategy.fsdp_state=full (gathered on rank 0) vs sharded.

    python scripts/bench/fsdp_checkpoint.py           # ~100M GPT-2-shaped model, 2 CPU workers (~4 min here)
    python scripts/bench/fsdp_checkpoint.py --quick   # a small model, for a smoke test (writes under results/smoke/)

Each mode trains the same 4 steps with a checkpoint at step 2 (not the last, so sharded state writes no
consolidated model) and sync upload (the whole write happens inside the measured window). Each rank
reports its resident set just before that checkpoint and its peak during it (VmHWM, reset in between):
the difference is what checkpointing costs that rank (memory freed by training and kept by the allocator
is reused first, so the peak itself is the figure to compare between ranks).
Writes results/benchmarks/fsdp_checkpoint_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import GPT2_SMALL, GPT2_TINY, machine, publish  # noqa: E402


def run(state: str, quick: bool) -> dict:
    storage = tempfile.mkdtemp(prefix="rtune-bench-fsdp-")
    cmd = [sys.executable, "-m", "rtune", "train", *(GPT2_TINY if quick else GPT2_SMALL), "strategy=fsdp",
           f"strategy.fsdp_state={state}", "num_workers=2", f"storage_path={storage}", "run_name=fsdp",
           "trainer.max_steps=4", "trainer.checkpoint_every_steps=2", "trainer.eval_every_steps=2",
           "trainer.eval_max_batches=1", "trainer.micro_batch_size=1", "data.seq_len=128",
           "trainer.checkpoint_upload=sync", "tracking.backends=[]"]
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - t0
    with open(os.path.join(storage, "fsdp", "summary.json")) as f:
        summary = json.load(f)
    first = os.path.join(storage, "fsdp", "checkpoint_00000002")
    files = {os.path.relpath(os.path.join(d, n), first): os.path.getsize(os.path.join(d, n))
             for d, _, names in os.walk(first) for n in names}
    rss = summary["checkpoint_rss_mb_per_worker"]
    return {"rss_before_checkpoint_mb_per_rank": [r["before"] for r in rss],
            "peak_rss_during_checkpoint_mb_per_rank": [r["peak"] for r in rss],
            "checkpoint_extra_rss_mb_per_rank": [r["peak"] - r["before"] for r in rss],
            "checkpoint_mb": round(sum(files.values()) / 2**20, 1),
            "largest_files_mb": {k: round(v / 2**20, 1) for k, v in sorted(files.items(), key=lambda kv: -kv[1])[:3]},
            "params": summary["total_params"], "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "benchmarks", "fsdp_checkpoint_memory.json"))
    args = parser.parse_args()
    results = {state: run(state, args.quick) for state in ("full", "sharded")}
    full, sharded = (results[s]["peak_rss_during_checkpoint_mb_per_rank"] for s in ("full", "sharded"))
    report = {
        "what": "memory one checkpoint adds to each FSDP2 rank (peak during the write minus the resident set "
                "just before; 2 workers on CPU, sync upload, local storage): gathered on rank 0 vs sharded",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, **results,
        "rank0_peak_full_minus_sharded_mb": full[0] - sharded[0],
        "rank0_minus_rank1_peak_mb": {"full": full[0] - full[1], "sharded": sharded[0] - sharded[1]}}
    publish(report, args.out, args.quick)


if __name__ == "__main__":
    main()
