"""Rank 0's view of training: progress lines, metrics.jsonl and events.jsonl, tokens/s, MFU and the ETA.

Throughput counts non-padding tokens and leaves out the first `WARMUP_STEPS` steps after each (re)start,
which pay for allocator warm-up and first-touch of the data.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Dict, Optional

from rtune.metrics import EVENTS_FILE, append_record, format_record, read_metrics, truncate_after
from rtune.worker.collectives import all_reduce_sum

WARMUP_STEPS = 2
# Dense (no sparsity) peak FLOP/s per GPU from NVIDIA's datasheets (SXM parts); fp32 is the non-tensor-core
# rate, which torch uses for fp32 matmuls unless TF32 is enabled.
GPU_PEAK_FLOPS = {"H200": {"bf16": 989e12, "fp32": 67e12}, "H100": {"bf16": 989e12, "fp32": 67e12},
                  "A100": {"bf16": 312e12, "fp32": 19.5e12}, "L40S": {"bf16": 362e12, "fp32": 91.6e12},
                  "A10G": {"bf16": 70e12, "fp32": 31.2e12}, "L4": {"bf16": 121e12, "fp32": 30.3e12}}


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
            truncate_after(self.metrics_path, start_step)

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
        append_record(self.metrics_path, record)
        self.window_start = time.perf_counter()
        if self.echo:
            print("[rtune] " + format_record(record, self.max_steps), file=sys.stdout, flush=True)
        return record

    def event(self, message: str, **fields: Any) -> int:
        """Record a start/resume of the worker group (rank 0) in events.jsonl; returns how many it holds."""
        if not self.enabled:
            return 0
        events_path = os.path.join(os.path.dirname(self.metrics_path), EVENTS_FILE) if self.metrics_path else None
        append_record(events_path, {"time": time.time(), "message": message, **fields})
        if self.echo:
            print(f"[rtune] {message}", flush=True)
        return sum(1 for r in read_metrics(events_path) if not r.get("warning")) if events_path else 1

    def warn(self, message: str) -> None:
        """A warning the user must see: into events.jsonl (the driver shows it from there) and printed when
        this process echoes its progress."""
        if not self.enabled:
            return
        events_path = os.path.join(os.path.dirname(self.metrics_path), EVENTS_FILE) if self.metrics_path else None
        append_record(events_path, {"time": time.time(), "message": f"warning: {message}", "warning": True})
        if self.echo:
            print(f"[rtune] warning: {message}", flush=True)


class MetricWindow:
    """The training sums since the last logged step, added over ranks when a record is made.

    Per micro-batch: the objective's loss sum and metric sums, non-padding tokens, loss-bearing tokens and token
    slots (padding included). Per step: the loss units this rank's share of the step stands for (the step's
    units over all ranks / world size), so the logged loss is the step's loss sum over its units, exactly.
    """

    def __init__(self, device):
        self.device = device
        self._clear()

    def _clear(self) -> None:
        self.sums = {"loss": 0.0, "units": 0.0, "tokens": 0.0, "target_tokens": 0.0, "token_slots": 0.0}
        self.objective_sums: Dict[str, float] = {}
        self.step_tokens = self.step_targets = 0

    def add(self, batch: Dict[str, Any], loss_sum: float, metrics: Dict[str, Any], target_tokens: int) -> None:
        """One micro-batch's contribution."""
        tokens = int(batch["n_tokens"].sum())
        self.sums["loss"] += loss_sum
        self.sums["tokens"] += tokens
        self.sums["target_tokens"] += target_tokens
        self.sums["token_slots"] += batch["input_ids"].numel()  # computed positions, padding included
        self.step_tokens += tokens
        self.step_targets += target_tokens
        for key, value in metrics.items():
            self.objective_sums[key] = self.objective_sums.get(key, 0.0) + float(value)

    def end_step(self, units_this_rank: float) -> tuple[int, int]:
        """Close a step; returns this rank's (non-padding tokens, loss-bearing tokens) of it."""
        self.sums["units"] += units_this_rank
        done = self.step_tokens, self.step_targets
        self.step_tokens = self.step_targets = 0
        return done

    def record(self, lr: float, counters: Dict[str, int]) -> tuple[Dict[str, Any], int]:
        """(the logged record, non-padding tokens of the window over all ranks); a collective, then a new window."""
        names, metric_names = list(self.sums), sorted(self.objective_sums)
        totals = all_reduce_sum([self.sums[k] for k in names] + [self.objective_sums[k] for k in metric_names],
                                self.device)
        summed, metric_totals = dict(zip(names, totals)), totals[len(names):]
        units = max(summed["units"], 1.0)
        record = {"loss": summed["loss"] / units, "lr": lr, "tokens": int(summed["tokens"]),
                  "target_tokens": int(summed["target_tokens"]), "token_slots": int(summed["token_slots"]),
                  **counters, **{k: v / units for k, v in zip(metric_names, metric_totals)}}
        self._clear()
        return record, int(summed["tokens"])
