"""The metrics files of a run: what rank 0 writes, and how drivers, sweeps and tests read it back.

Ray Train V2 keeps only metrics reported together with a checkpoint, so per-step metrics go to our own
files in the run directory:

    metrics.jsonl   one JSON object per logged step: `step`, `loss`, `lr`, token counts, `tokens_per_s`,
                    `eval_*` at evaluations, the objective's metrics, `eta_s`, `time`
    events.jsonl    starts, resumes and restarts of the worker group, and warnings the user must see

A resumed run truncates metrics.jsonl back to its checkpoint's step and logs the lost steps again, so each
step appears once. The worker writes (`worker/progress.py`), the driver renders (`driver/progress.py`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"  # starts, resumes and restarts of the worker group


def append_record(path: Optional[str], record: Dict[str, Any]) -> None:
    """One JSON line (nothing when path is None)."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str) -> List[Dict[str, Any]]:
    """All records of a metrics.jsonl (a torn last line from a crash is skipped)."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def truncate_after(path: str, step: int) -> None:
    """Drop records past `step`: a resumed run re-logs the steps the failed attempt lost."""
    if not os.path.exists(path):
        return
    kept = [line for line in read_metrics(path) if line.get("step", 0) <= step]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def format_record(record: Dict[str, Any], max_steps: int) -> str:
    """One progress line: step, loss (online RL: reward), eval loss or reward, lr, tokens/s, ETA."""
    parts = [f"step {record['step']}/{max_steps}"]
    if "reward" in record:  # online RL: the reward is the curve to watch (its loss hovers near 0)
        parts.append(f"reward {record['reward']:.3f} (std {record['reward_std']:.3f})"
                     f" | {record['completion_tokens']:.1f} tok/completion")
    if "eval_reward" in record:
        parts.append(f"eval_reward {record['eval_reward']:.3f}")
    if "kl" in record:
        parts.append(f"kl {record['kl']:.4f}")
    if "loss" in record and "reward" not in record:
        parts.append(f"loss {record['loss']:.4f}")
    if "eval_loss" in record:
        ppl = f" (ppl {record['eval_ppl']:.1f})" if "eval_ppl" in record else ""
        parts.append(f"eval_loss {record['eval_loss']:.4f}{ppl}")
    if "eval_reward_accuracy" in record:
        parts.append(f"eval reward acc {record['eval_reward_accuracy']:.2f} "
                     f"(margin {record['eval_reward_margin']:.3f})")
    if "eval_pass@1" in record:
        parts.append(f"eval pass@1 {record['eval_pass@1']:.3f}")
    if "lr" in record:
        parts.append(f"lr {record['lr']:.2e}")
    parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
    if "mfu" in record:
        parts.append(f"mfu {100 * record['mfu']:.1f}%")
    if "eta_s" in record:
        parts.append(f"eta {format_duration(record['eta_s'])}")
    return " | ".join(parts)
