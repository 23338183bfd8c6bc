"""Rewards for online RL: named functions that score completions, run as Ray tasks, never fatal.

    rewards=[exact_match, my_pkg.rewards:length_penalty]  reward_weights=[1.0, 0.1]

A reward is a verifier of `verifiers.py` (`rust_tests` and `rust_compiles` build and run the code in the sandbox;
`exact_match`, `regex`) or a user's function named `pkg.module:function`, either per sample,
`f(prompt, completion, **columns) -> float` (as the verifiers take it), or batched as TRL's are,
`f(prompts, completions, **columns) -> list of floats` (recognised by its first parameter being named `prompts`).
The completion's reward is the weighted sum; each function's own mean is logged as `reward_<name>`.

A function that raises, runs past `timeout_s`, returns NaN / infinity / something not a number, or (batched)
returns the wrong number of scores gives 0 for the samples concerned, and they are counted (`reward_failures`):
one bad sample never ends a run. Only a name that cannot be loaded is an error, raised before anything starts.
"""

from __future__ import annotations

import inspect
import math
import signal
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from rtune.verifiers import BUILT_IN, check_one, user_function

INLINE = ("exact_match", "regex")  # a comparison: cheaper here than a Ray task's round trip


def reward_name(spec: str) -> str:
    """`exact_match` -> exact_match; `pkg.module:length_penalty` -> length_penalty (the metric's suffix)."""
    return spec.rpartition(":")[2]


def is_batched(fn) -> bool:
    params = list(inspect.signature(fn).parameters)
    return bool(params) and params[0] == "prompts"


@dataclass
class Scores:
    """Weighted totals per completion, each function's scores, and the samples each function failed (scored 0)."""

    total: List[float]
    by_function: Dict[str, List[float]]
    failures: Dict[str, int]


class _Timeout(Exception):
    pass


def _alarm(seconds: float):
    def on_alarm(signum, frame):
        raise _Timeout()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _finite(value: Any) -> Optional[float]:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


def score_chunk(spec: str, records: List[Dict[str, Any]], completions: List[str], timeout_s: float
                ) -> List[Optional[float]]:
    """Scores of one function for a chunk of samples (None: that sample failed). Runs inside a Ray task."""
    if spec in BUILT_IN:  # Rust checks time out inside the sandbox; the others are a comparison
        return [check_one(spec, r, c, timeout_s).score for r, c in zip(records, completions)]
    fn = user_function(spec)
    in_main_thread = hasattr(signal, "SIGALRM")
    if is_batched(fn):
        columns = {k: [r.get(k) for r in records] for k in {k for r in records for k in r} - {"prompt"}}
        try:
            if in_main_thread:
                _alarm(timeout_s * len(records))
            values = fn([r.get("prompt") for r in records], completions, **columns)
        except (Exception, _Timeout):  # noqa: BLE001 - a user's function failing scores 0, never ends the run
            return [None] * len(records)
        finally:
            if in_main_thread:
                signal.setitimer(signal.ITIMER_REAL, 0)
        if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != len(records):
            return [None] * len(records)
        return [_finite(v) for v in values]
    out: List[Optional[float]] = []
    for record, completion in zip(records, completions):
        columns = {k: v for k, v in record.items() if k != "prompt"}
        try:
            if in_main_thread:
                _alarm(timeout_s)
            out.append(_finite(fn(record.get("prompt"), completion, **columns)))
        except (Exception, _Timeout):  # noqa: BLE001
            out.append(None)
        finally:
            if in_main_thread:
                signal.setitimer(signal.ITIMER_REAL, 0)
    return out


class Rewards:
    """The run's reward functions and weights; `score` spreads the calls over the cluster as Ray tasks.

    Args:
        specs: Reward names (built-in verifiers or `pkg.module:function`).
        weights: One weight per reward (None: all 1).
        timeout_s: Seconds a call may take per sample.
        chunk: Samples per Ray task.
    """

    def __init__(self, specs: Sequence[str], weights: Optional[Sequence[float]] = None, timeout_s: float = 10.0,
                 chunk: int = 64):
        for spec in specs:
            if spec not in BUILT_IN:
                user_function(spec, "reward")  # a name that cannot be loaded: one UserError, now
        self.specs, self.timeout_s, self.chunk = list(specs), timeout_s, chunk
        self.weights = list(weights) if weights is not None else [1.0] * len(self.specs)
        self.names = [reward_name(s) for s in self.specs]

    def score(self, records: Sequence[Mapping[str, Any]], completions: Sequence[str]) -> Scores:
        import ray

        records, completions = [dict(r) for r in records], list(completions)
        task = ray.remote(num_cpus=0, max_retries=0)(score_chunk)  # the workers hold the cores, and wait
        calls, inline = [], {}
        for spec in self.specs:
            if spec in INLINE:
                inline[spec] = score_chunk(spec, records, completions, self.timeout_s)
                continue
            for start in range(0, len(records), self.chunk):
                end = start + self.chunk
                calls.append((spec, start, task.remote(spec, records[start:end], completions[start:end],
                                                       self.timeout_s)))
        # A chunk's own per-sample alarms end hung Python calls; this deadline catches calls deaf to signals.
        deadline = time.monotonic() + self.timeout_s * self.chunk + 30
        refs = [ref for _, _, ref in calls]
        ready = ray.wait(refs, num_returns=len(refs), timeout=max(1.0, deadline - time.monotonic()))[0] if refs else []
        done = {ref.hex() for ref in ready}
        by_function = {name: [0.0] * len(records) for name in self.names}
        failures = {name: 0 for name in self.names}
        for spec, values in inline.items():
            by_function[reward_name(spec)] = [float(v) for v in values]
        for spec, start, ref in calls:
            name = reward_name(spec)
            n = len(records[start:start + self.chunk])
            if ref.hex() in done:
                try:
                    values = ray.get(ref)
                except Exception:  # noqa: BLE001 - a task that died (its process killed): these samples score 0
                    values = [None] * n
            else:
                ray.cancel(ref, force=True)
                values = [None] * n
            for i, value in enumerate(values):
                if value is None:
                    failures[name] += 1
                else:
                    by_function[name][start + i] = value
        total = [sum(w * by_function[name][i] for w, name in zip(self.weights, self.names))
                 for i in range(len(records))]
        return Scores(total, by_function, failures)
