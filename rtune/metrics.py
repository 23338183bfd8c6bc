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
import threading
import time
from typing import Any, Dict, List, Optional

WARMUP_STEPS = 2
# Dense (no sparsity) peak FLOP/s per GPU from NVIDIA's datasheets (SXM parts); fp32 is the non-tensor-core
# rate, which torch uses for fp32 matmuls unless TF32 is enabled.
GPU_PEAK_FLOPS = {"H200": {"bf16": 989e12, "fp32": 67e12}, "H100": {"bf16": 989e12, "fp32": 67e12},
                  "A100": {"bf16": 312e12, "fp32": 19.5e12}, "L40S": {"bf16": 362e12, "fp32": 91.6e12},
                  "A10G": {"bf16": 70e12, "fp32": 31.2e12}, "L4": {"bf16": 121e12, "fp32": 30.3e12}}
METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"  # starts, resumes and restarts of the worker group


def flops_per_token(model_config, n_params: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls (forward + backward) + 12*L*d*T for attention (PaLM, nanoGPT)."""
    layers = getattr(model_config, "num_hidden_layers", None) or getattr(model_config, "n_layer", 0)
    width = getattr(model_config, "hidden_size", None) or getattr(model_config, "n_embd", 0)
    return 6 * n_params + 12 * layers * width * seq_len


def peak_flops(device, precision: str, cpus_per_worker: int) -> tuple[float, str]:
    """(peak FLOP/s of one worker's device, where the figure comes from)."""
    key = "bf16" if precision == "bf16" else "fp32"
    if device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
        for gpu, peaks in GPU_PEAK_FLOPS.items():
            if gpu in name:
                return peaks[key], f"{gpu} {key} datasheet peak"
        return float("nan"), f"unknown GPU {name!r}: no peak in the table"
    flags = ""
    ghz = 0.0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = line
                if line.startswith("cpu MHz") and not ghz:
                    ghz = float(line.split(":")[1]) / 1000
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            ghz = int(f.read()) / 1e6
    except (OSError, ValueError):
        pass
    # fp32 FLOPs/cycle/core: 2 FMA units x vector lanes x 2 (AVX-512: 16 lanes, AVX2: 8, else 4 by SSE).
    per_cycle = 64 if "avx512f" in flags else (32 if "avx2" in flags else 16)
    return (cpus_per_worker * (ghz or 2.0) * 1e9 * per_cycle,
            f"CPU assumption: {cpus_per_worker} core(s) x {ghz or 2.0:.2f} GHz x {per_cycle} fp32 FLOPs/cycle")


def reset_peak_rss() -> None:
    """Restart this process's resident-set high-water mark (Linux: writing 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _status_mb(field: str) -> Optional[float]:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MB; None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """This process's resident set now (0 where /proc is missing)."""
    return _status_mb("VmRSS") or 0.0


def peak_rss_mb() -> float:
    """Peak resident set since the last reset_peak_rss (VmHWM), else since the process started."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
        echo: Print progress lines here (False when the driver renders them from the files).
    """

    def __init__(self, metrics_path: Optional[str], start_step: int, max_steps: int, enabled: bool,
                 echo: bool = True, flops_per_token: float = 0.0, peak_flops_total: float = 0.0):
        self.flops_per_token, self.peak_flops_total = flops_per_token, peak_flops_total
        self.enabled = enabled
        self.echo = echo
        self.metrics_path = metrics_path if enabled else None
        self.max_steps = max_steps
        self.start_step = start_step
        self.steady_start: Optional[float] = None
        self.steady_tokens = 0
        self.steady_targets = 0
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

    def steady_target_tokens_per_s(self) -> Optional[float]:
        """Loss-bearing tokens per second (what SFT learns from; padding and prompts excluded)."""
        if self.steady_start is None or self.steady_steps == 0:
            return None
        return self.steady_targets / self._steady_elapsed()

    def steady_mfu(self) -> Optional[float]:
        tokens_per_s = self.steady_tokens_per_s()
        if tokens_per_s is None or not self.peak_flops_total > 0:
            return None
        return tokens_per_s * self.flops_per_token / self.peak_flops_total

    def step(self, step: int, tokens: int, targets: int = 0) -> None:
        """Account one finished optimizer step: `tokens` non-padding tokens, `targets` of them loss-bearing."""
        if step - self.start_step == WARMUP_STEPS:
            self.steady_start = time.perf_counter()
        elif self.steady_start is not None:
            self.steady_tokens += tokens
            self.steady_targets += targets
            self.steady_steps += 1

    def log(self, step: int, record: Dict[str, Any], window_tokens: int) -> Dict[str, Any]:
        """Print one progress line and append `record` (plus step, tokens/s, ETA) to metrics.jsonl.

        Returns the full record written."""
        now = time.perf_counter()
        elapsed = now - self.window_start
        tokens_per_s = window_tokens / max(elapsed, 1e-9)
        record = {"step": step, **record, "tokens_per_s": round(tokens_per_s, 1), "time": round(time.time(), 3)}
        if "target_tokens" in record:
            record["target_tokens_per_s"] = round(record["target_tokens"] / max(elapsed, 1e-9), 1)
        if self.peak_flops_total > 0 and window_tokens:
            record["mfu"] = round(tokens_per_s * self.flops_per_token / self.peak_flops_total, 5)
        if not self.enabled:
            return record
        if self.steady_steps:
            per_step = self._steady_elapsed() / self.steady_steps
            record["eta_s"] = round(per_step * (self.max_steps - step), 1)
        self._append(self.metrics_path, record)
        self.window_start = time.perf_counter()
        if self.echo:
            print("[rtune] " + format_record(record, self.max_steps), file=sys.stdout, flush=True)
        return record

    def event(self, message: str, **fields: Any) -> int:
        """Record a start/resume of the worker group (rank 0) in events.jsonl; returns how many it holds."""
        if not self.enabled:
            return 0
        events_path = os.path.join(os.path.dirname(self.metrics_path), EVENTS_FILE) if self.metrics_path else None
        self._append(events_path, {"time": time.time(), "message": message, **fields})
        if self.echo:
            print(f"[rtune] {message}", flush=True)
        return sum(1 for r in read_metrics(events_path) if not r.get("warning")) if events_path else 1

    def warn(self, message: str) -> None:
        """A warning the user must see: into events.jsonl (the driver shows it from there) and printed when
        this process echoes its progress."""
        if not self.enabled:
            return
        events_path = os.path.join(os.path.dirname(self.metrics_path), EVENTS_FILE) if self.metrics_path else None
        self._append(events_path, {"time": time.time(), "message": f"warning: {message}", "warning": True})
        if self.echo:
            print(f"[rtune] warning: {message}", flush=True)

    @staticmethod
    def _append(path: Optional[str], record: Dict[str, Any]) -> None:
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")


def format_record(record: Dict[str, Any], max_steps: int) -> str:
    """One progress line: step, loss, eval loss, lr, tokens/s, ETA."""
    parts = [f"step {record['step']}/{max_steps}"]
    if "loss" in record:
        parts.append(f"loss {record['loss']:.4f}")
    if "eval_loss" in record:
        ppl = f" (ppl {record['eval_ppl']:.1f})" if "eval_ppl" in record else ""
        parts.append(f"eval_loss {record['eval_loss']:.4f}{ppl}")
    if "eval_reward_accuracy" in record:
        parts.append(f"eval reward acc {record['eval_reward_accuracy']:.2f} "
                     f"(margin {record['eval_reward_margin']:.3f})")
    if "lr" in record:
        parts.append(f"lr {record['lr']:.2e}")
    parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
    if "mfu" in record:
        parts.append(f"mfu {100 * record['mfu']:.1f}%")
    if "eta_s" in record:
        parts.append(f"eta {format_duration(record['eta_s'])}")
    return " | ".join(parts)


class _Tail:
    """New JSON lines of a file that may be truncated and rewritten (a resumed run trims metrics.jsonl)."""

    def __init__(self, path: str):
        self.path, self.offset = path, 0

    def read(self) -> List[Dict[str, Any]]:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return []
        if size < self.offset:
            self.offset = 0
        with open(self.path) as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]  # a half-written last line waits for the next poll
        self.offset += len(complete.encode())
        out = []
        for line in complete.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class DriverProgress(threading.Thread):
    """Renders rank 0's metrics on the driver: a tqdm bar on a terminal, plain lines otherwise.

    Used when the run directory is on the driver's disk; worker output then stays in Ray's logs, so
    the user sees rtune's progress and not Ray's log stream (e.g. a restarted worker's traceback).
    """

    def __init__(self, run_dir: str, max_steps: int, poll_s: float = 0.5, resume_step: Optional[int] = None):
        super().__init__(daemon=True)
        self.max_steps, self.poll_s = max_steps, poll_s
        self.metrics = _Tail(os.path.join(run_dir, METRICS_FILE))
        self.events = _Tail(os.path.join(run_dir, EVENTS_FILE))
        for tail in (self.metrics, self.events):  # only what this invocation writes
            tail.offset = os.path.getsize(tail.path) if os.path.exists(tail.path) else 0
        # A resumed run trims metrics.jsonl back to its checkpoint, which sends the tail back to the start of
        # the file: everything up to the resume step was shown by the earlier attempt and is not replayed.
        self.last_step = -1 if resume_step is None else resume_step
        self._stop_event = threading.Event()
        self.bar = None
        if sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=max_steps, desc="rtune", unit="step", dynamic_ncols=True)

    def _say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def poll(self) -> None:
        for event in self.events.read():
            self._say(f"[rtune] {event.get('message', '')}")
        for record in self.metrics.read():
            step = record.get("step", 0)
            if step <= self.last_step:
                continue  # re-read after a resume (a re-run, or a worker restart) trimmed the file
            self.last_step = max(self.last_step, step)
            if self.bar is not None:
                self.bar.n = step
                postfix = {"loss": f"{record['loss']:.3f}"} if "loss" in record else {}
                postfix["tok/s"] = f"{record['tokens_per_s']:,.0f}"
                self.bar.set_postfix(postfix, refresh=True)
                if "eval_loss" in record:
                    self.bar.write("[rtune] " + format_record(record, self.max_steps))
            else:
                self._say("[rtune] " + format_record(record, self.max_steps))

    def run(self) -> None:
        while not self._stop_event.wait(self.poll_s):
            self.poll()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=5)
        self.poll()
        if self.bar is not None:
            self.bar.close()


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
    """Training and eval loss against step (and, for preference objectives, the held-out reward accuracy
    on a second axis), as a PNG next to the metrics. None if nothing to plot."""
    if not os.path.exists(metrics_path):
        return None
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    accuracy = [(r["step"], r["eval_reward_accuracy"]) for r in records if "eval_reward_accuracy" in r]
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
    ax.set_ylabel("loss" if accuracy else "cross-entropy (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if accuracy:
        right = ax.twinx()
        right.plot(*zip(*accuracy), "s--", color="tab:green", label="held-out reward accuracy", lw=1.5)
        right.set_ylim(0, 1.05)
        right.set_ylabel("reward accuracy (chosen > rejected)")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="center right")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
