"""Sweeps: many runs under one sweep directory, and one summary of them.

Two producers share this module: Hydra multirun (`python -m rtune train -m optim.lr=1e-4,3e-4 peft=none,lora`,
jobs one after another on one warm Ray cluster) and Ray Tune (`python -m rtune tune`, rtune/driver/search.py,
trials side by side). Each run is an ordinary rtune run (checkpoints, metrics.jsonl, summary.json,
loss_curve.png) named after its overrides, under `<storage_path>/<sweep_name>/`. The sweep summary
(`sweep_summary.csv`, `sweep_summary.md`, `sweep_eval_loss.png`) is rewritten after every run, so a
sweep that dies half-way still says what it did.

Re-running a sweep with the same arguments finds the same directory: finished runs are skipped,
unfinished ones resume from their newest checkpoint (rtune's usual resume-by-name).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import time
from typing import Any, Dict, List, Optional

from rtune.config import is_uri
from rtune.metrics import METRICS_FILE, read_metrics
from rtune.tracking import finish_sweep

SUMMARY_CSV, SUMMARY_MD, SUMMARY_PNG = "sweep_summary.csv", "sweep_summary.md", "sweep_eval_loss.png"
FAILED_FILE = "failed.json"  # in a run dir: the last attempt's error (removed when a later attempt finishes)
# Overrides that place or name a run rather than define it: left out of run names and sweep ids.
_PLACEMENT_KEYS = {"storage_path", "run_name", "sweep_name", "ray_address", "hydra.verbose"}
COLUMNS = ["run_name", "status", "overrides", "final_step", "eval_loss", "best_checkpoint", "tokens_per_s",
           "wall_s", "error"]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def sweep_name_for(args: List[str]) -> str:
    """A stable sweep directory name from the sweep's own arguments (order-independent)."""
    defining = sorted(a for a in args if not a.startswith("-") and _key(a) not in _PLACEMENT_KEYS)
    digest = hashlib.sha1("\n".join(defining).encode()).hexdigest()[:8]
    return f"sweep-{digest}"


def swept_keys(args: List[str]) -> List[str]:
    """The keys a multirun command line sweeps over (`optim.lr=1e-4,3e-4`, `x=range(1,4)`), per Hydra's parser."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if not a.startswith("-")]
    return [o.key_or_group for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()]


def sweep_dir_for(storage_path: str, sweep_name: str) -> str:
    """`<storage_path>/<sweep_name>`, absolute for a local path (Ray workers run elsewhere), as is for a URI."""
    if not is_uri(storage_path):
        storage_path = os.path.abspath(os.path.expanduser(storage_path))
    return f"{storage_path.rstrip('/')}/{sweep_name}"


def run_name_for(overrides: List[str], prefix: str = "", keys: Optional[List[str]] = None) -> str:
    """`optim.lr=0.0003,peft=lora`: a readable run name from a job's overrides (valid as rtune run_name).

    With `keys`, only those overrides name the run (the swept ones; the sweep directory holds the rest).
    """
    parts = sorted(o.lstrip("+~") for o in overrides
                   if _key(o) not in _PLACEMENT_KEYS and (keys is None or _key(o) in keys))
    name = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", ",".join(parts)) or "defaults"
    if len(name) > 96:  # file systems cap names at 255 bytes; keep them readable, unique by hash
        name = f"{name[:80]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    name = prefix + name
    return name if name[0].isalnum() else f"r{name}"


def is_finished(run_dir: str, max_steps: int) -> Optional[Dict[str, Any]]:
    """The run's summary if it already reached max_steps, else None."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    return summary if (summary.get("final_step") or 0) >= max_steps else None


def record_failure(run_dir: str, message: str) -> None:
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, FAILED_FILE), "w") as f:
        json.dump({"error": message, "time": time.time()}, f)


def clear_failure(run_dir: str) -> None:
    path = os.path.join(run_dir, FAILED_FILE)
    if os.path.exists(path):
        os.remove(path)


def row(run_name: str, overrides: str, status: str, summary: Optional[Dict[str, Any]] = None,
        error: str = "", run_dir: Optional[str] = None, metric: str = "eval_loss", mode: str = "min"
        ) -> Dict[str, Any]:
    """One line of the sweep summary; without a summary, what the run's metrics.jsonl says so far. `metric` (the
    one the sweep ranks by, e.g. eval_pass@1) gets a column of its own beside eval_loss."""
    summary = summary or {}
    out = {"run_name": run_name, "status": status, "overrides": overrides,
           "final_step": summary.get("final_step"), "eval_loss": summary.get("eval_loss"), metric: summary.get(metric),
           "best_checkpoint": summary.get("best_checkpoint"), "tokens_per_s": summary.get("steady_tokens_per_s"),
           "wall_s": summary.get("wall_s"), "error": error}
    metrics_path = os.path.join(run_dir, METRICS_FILE) if run_dir else None
    if not summary and metrics_path and os.path.exists(metrics_path):
        records = read_metrics(metrics_path)
        evals = [r for r in records if "eval_loss" in r]
        scored = [r for r in records if metric in r]
        out["final_step"] = max((r.get("step", 0) for r in records), default=None)
        out["eval_loss"] = evals[-1]["eval_loss"] if evals else None
        out[metric] = scored[-1][metric] if scored else None
        out["best_checkpoint"] = _best_checkpoint(run_dir, scored, metric, mode)
        steps = [r for r in records if "loss" in r and "tokens_per_s" in r]
        if steps:  # median over logging windows: robust to the first, compile-and-warm-up window
            speeds = sorted(r["tokens_per_s"] for r in steps)
            out["tokens_per_s"] = speeds[len(speeds) // 2]
        times = [r["time"] for r in records if "time" in r]
        out["wall_s"] = round(times[-1] - times[0], 1) if len(times) > 1 else None
    return out


def _best_checkpoint(run_dir: str, scored: List[Dict[str, Any]], metric: str, mode: str) -> Optional[str]:
    """The kept checkpoint with the best `metric`, from the metrics (runs stopped before their summary)."""
    from rtune import checkpoint as ckpt

    sign = 1 if mode == "min" else -1
    by_step = {r["step"]: sign * r[metric] for r in scored}
    kept = [(by_step.get(step, float("inf")), path) for step, path in ckpt.list_checkpoints(run_dir)]
    return min(kept)[1] if kept else None


def write_summary(sweep_dir: str, rows: List[Dict[str, Any]], title: str, metric: str = "eval_loss",
                  mode: str = "min") -> Dict[str, str]:
    """sweep_summary.csv / .md (best `metric` first) and the eval-loss comparison plot; returns their paths."""
    os.makedirs(sweep_dir, exist_ok=True)
    paths = {"csv": os.path.join(sweep_dir, SUMMARY_CSV), "md": os.path.join(sweep_dir, SUMMARY_MD)}
    columns = COLUMNS if metric in COLUMNS else COLUMNS[:5] + [metric] + COLUMNS[5:]
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in columns} for r in rows)
    sign = 1 if mode == "min" else -1
    ranked = sorted(rows, key=lambda r: (r.get(metric) is None, sign * (r.get(metric) or 0.0)))
    extra = metric != "eval_loss"
    lines = [f"# {title}", "", f"{len(rows)} runs, best {metric} ({mode}) first: " + ", ".join(
        f"{sum(r['status'] == s for r in rows)} {s}" for s in dict.fromkeys(r["status"] for r in rows)), "",
        "| run | status | final eval loss |" + (f" {metric} |" if extra else "") + " step | tokens/s | wall (s) | "
        "best checkpoint | error |",
        "| --- | --- | ---: |" + (" ---: |" if extra else "") + " ---: | ---: | ---: | --- | --- |"]
    for r in ranked:
        lines.append(f"| {r['run_name']} | {r['status']} | {_fmt(r.get('eval_loss'), '.4f')} | "
                     + (f"{_fmt(r.get(metric), '.4f')} | " if extra else "")
                     + f"{_fmt(r.get('final_step'), 'd')} | {_fmt(r.get('tokens_per_s'), ',.0f')} | "
                     f"{_fmt(r.get('wall_s'), '.1f')} | {r.get('best_checkpoint') or ''} | "
                     f"{(r.get('error') or '').replace('|', '/')[:200]} |")
    with open(paths["md"], "w") as f:
        f.write("\n".join(lines) + "\n")
    png = plot_sweep(sweep_dir, rows, title)
    if png:
        paths["png"] = png
    return paths


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def plot_sweep(sweep_dir: str, rows: List[Dict[str, Any]], title: str) -> Optional[str]:
    """Every run's eval-loss curve on one plot (runs without an evaluation are left out)."""
    curves = []
    for r in rows:
        path = os.path.join(sweep_dir, r["run_name"], METRICS_FILE)
        if os.path.exists(path):
            points = [(m["step"], m["eval_loss"]) for m in read_metrics(path) if "eval_loss" in m]
            if points:
                curves.append((r, points))
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for r, points in curves:
        style = "--" if r["status"] != "finished" else "-"
        ax.plot(*zip(*points), style, marker="o", ms=3, lw=1.3, label=f"{r['run_name']} ({r['status']})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("eval loss (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = os.path.join(sweep_dir, SUMMARY_PNG)
    fig.savefig(out)
    plt.close(fig)
    return out


class MultirunSweep:
    """The Hydra multirun side: runs each job (or skips it) and keeps the summary current."""

    def __init__(self, sweep_name: str, keys: Optional[List[str]] = None):
        self.sweep_name, self.keys = sweep_name, keys
        self.rows: List[Dict[str, Any]] = []
        self.sweep_dir: Optional[str] = None
        self.last_cfg = None

    def run_job(self, cfg, task_overrides: List[str], train_fn) -> None:
        """One job: derive its name and directory, skip it if finished, else train (resuming if begun)."""
        storage = cfg.storage_path
        self.last_cfg = cfg
        cfg.sweep_name = cfg.sweep_name or self.sweep_name
        cfg.storage_path = self.sweep_dir = sweep_dir_for(storage, cfg.sweep_name)
        cfg.run_name = run_name_for(task_overrides, keys=self.keys or None)
        overrides = " ".join(o for o in task_overrides if _key(o) not in _PLACEMENT_KEYS)
        run_dir = os.path.join(cfg.storage_path, cfg.run_name)
        done = None if is_uri(storage) else is_finished(run_dir, cfg.trainer.max_steps)
        if done is not None:
            print(f"[rtune] sweep {cfg.sweep_name}: {cfg.run_name} already finished (step {done['final_step']}); "
                  "skipping", flush=True)
            self.rows.append(row(cfg.run_name, overrides, "finished", done, **self._ranking(cfg)))
        else:
            print(f"[rtune] sweep {cfg.sweep_name}: job {len(self.rows) + 1}: {cfg.run_name}", flush=True)
            try:
                summary = train_fn(cfg)
                clear_failure(run_dir)
                self.rows.append(row(cfg.run_name, overrides, "finished", summary, **self._ranking(cfg)))
            except KeyboardInterrupt:
                raise
            except Exception as err:  # a failed job is recorded and the sweep goes on
                message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                print(f"rtune: error: sweep job {cfg.run_name} failed: {message}", flush=True)
                if not is_uri(storage):
                    record_failure(run_dir, message)
                self.rows.append(row(cfg.run_name, overrides, "failed", error=message,
                                     run_dir=run_dir if os.path.isdir(run_dir) else None, **self._ranking(cfg)))
        if not is_uri(storage):
            write_summary(self.sweep_dir, self.rows, f"rtune sweep {cfg.sweep_name}", **self._ranking(cfg))

    @staticmethod
    def _ranking(cfg) -> Dict[str, str]:
        """What the summary ranks the runs by: search.metric and search.mode (eval_loss, min by default)."""
        return {"metric": cfg.search.metric, "mode": cfg.search.mode}

    def report(self) -> int:
        """Where the summary is; exit code 1 if any job failed."""
        if self.sweep_dir is None:
            return 0
        failed = [r["run_name"] for r in self.rows if r["status"] == "failed"]
        if self.last_cfg is not None:
            finish_sweep(self.last_cfg, [os.path.join(self.sweep_dir, n) for n in (SUMMARY_MD, SUMMARY_PNG)],
                         failed=bool(failed))
        print(f"[rtune] sweep {self.sweep_name}: {len(self.rows)} runs, {len(failed)} failed -> "
              f"{os.path.join(self.sweep_dir, SUMMARY_MD)}", flush=True)
        if failed:
            print(f"rtune: error: {len(failed)} sweep job(s) failed ({', '.join(failed)}); run the same command "
                  "again to retry them (finished jobs are skipped)", flush=True)
        return 1 if failed else 0
