"""Progress on rank 0, per-step metric files, and the loss-curve plot.

Ray Train V2 keeps only metrics reported together with a checkpoint, so per-step metrics go to our
own `metrics.jsonl` in the run directory (one JSON object per logged step).
Throughput counts non-padding tokens and leaves out the first `WARMUP_STEPS` steps after each
(re)start, which pay for allocator warm-up and first-touch of the data.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

WARMUP_STEPS = 2
METRICS_FILE = "metrics.jsonl"


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ProgressLog:
    """Rank 0's view of training: prints progress lines and appends to metrics.jsonl.

    Args:
        metrics_path: metrics.jsonl to append to (None: do not write one).
        start_step: Step the run (re)started from; lines past it from an earlier attempt are dropped.
        max_steps: Total steps, for the ETA.
        enabled: False on every rank but 0.
    """

    def __init__(self, metrics_path: Optional[str], start_step: int, max_steps: int, enabled: bool):
        self.enabled = enabled
        self.metrics_path = metrics_path if enabled else None
        self.max_steps = max_steps
        self.start_step = start_step
        self.steady_start: Optional[float] = None
        self.steady_tokens = 0
        self.steady_steps = 0
        self.window_start = time.perf_counter()
        self.paused_s = 0.0  # time inside paused() since the steady-state clock started
        if self.metrics_path:
            os.makedirs(os.path.dirname(self.metrics_path), exist_ok=True)
            _truncate_after(self.metrics_path, start_step)

    @contextlib.contextmanager
    def paused(self):
        """Leave the enclosed time (eval, checkpointing) out of every tokens/s and ETA figure."""
        begin = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - begin
            self.window_start += spent
            if self.steady_start is not None:
                self.paused_s += spent

    def _steady_elapsed(self) -> float:
        return time.perf_counter() - self.steady_start - self.paused_s

    def steady_tokens_per_s(self) -> Optional[float]:
        if self.steady_start is None or self.steady_steps == 0:
            return None
        return self.steady_tokens / self._steady_elapsed()

    def step(self, step: int, tokens: int) -> None:
        """Account one finished optimizer step that processed `tokens` non-padding tokens (all ranks)."""
        if step - self.start_step == WARMUP_STEPS:
            self.steady_start = time.perf_counter()
        elif self.steady_start is not None:
            self.steady_tokens += tokens
            self.steady_steps += 1

    def log(self, step: int, record: Dict[str, Any], window_tokens: int) -> None:
        """Print one progress line and append `record` (plus step, tokens/s, ETA) to metrics.jsonl."""
        now = time.perf_counter()
        elapsed = now - self.window_start
        record = {"step": step, **record, "tokens_per_s": round(window_tokens / max(elapsed, 1e-9), 1)}
        if not self.enabled:
            return
        if self.steady_steps:
            per_step = self._steady_elapsed() / self.steady_steps
            record["eta_s"] = round(per_step * (self.max_steps - step), 1)
        self._append(record)
        self.window_start = time.perf_counter()
        parts = [f"step {step}/{self.max_steps}"]
        if "loss" in record:
            parts.append(f"loss {record['loss']:.4f}")
        if "eval_loss" in record:
            parts.append(f"eval_loss {record['eval_loss']:.4f} (ppl {record['eval_ppl']:.1f})")
        if "lr" in record:
            parts.append(f"lr {record['lr']:.2e}")
        parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
        if "eta_s" in record:
            parts.append(f"eta {format_duration(record['eta_s'])}")
        print("[rtune] " + " | ".join(parts), file=sys.stdout, flush=True)

    def _append(self, record: Dict[str, Any]) -> None:
        if self.metrics_path:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")


def _truncate_after(path: str, step: int) -> None:
    """Drop records past `step`: a resumed run re-logs the steps the failed attempt lost."""
    if not os.path.exists(path):
        return
    kept = [line for line in read_metrics(path) if line.get("step", 0) <= step]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)


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


def plot_losses(metrics_path: str, out_png: str, title: str) -> Optional[str]:
    """Training and eval loss against step, as a PNG next to the metrics. None if nothing to plot."""
    if not os.path.exists(metrics_path):
        return None
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
