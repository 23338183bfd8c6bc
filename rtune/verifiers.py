"""Verifiers: does a completion do what its task asks? Each returns a `Check` (a status and a score in [0, 1]).

    rust_tests     the task's code prefix + the completion + its `#[cfg(test)]` module, built with `rustc --test`
                   and run in the sandbox: passed when every test passes
    rust_compiles  the prefix + the completion type-check as a library (`rustc --emit=metadata`)
    exact_match    the completion, stripped, equals the record's `answer`
    regex          the record's `pattern` (a Python regular expression) matches somewhere in the completion
    pkg.mod:fn     a user's function `fn(prompt, completion, **columns) -> float` (or bool)

Statuses (public, in eval_results.jsonl): passed, failed, compile_error, timeout, sandbox_killed. Rust code runs only
in the sandbox (`sandbox.py`); a check that hangs, crashes, forks without end or fills its disk is scored 0 with its
status, never an error of the run. `check_many` spreads checks over the cluster as Ray tasks.
"""

from __future__ import annotations

import importlib
import math
import re
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping

from rtune.errors import UserError
from rtune.sandbox import Limits, run, rust_toolchain

BUILT_IN = ("rust_tests", "rust_compiles", "exact_match", "regex")
STATUSES = ("passed", "failed", "compile_error", "timeout", "sandbox_killed")
COMPILE_LIMITS = Limits(timeout_s=60, cpu_s=60, memory_mb=4096, file_mb=256, procs=64)
RUSTC = ["{toolchain}/bin/rustc", "--edition", "2021", "-C", "opt-level=0", "-C", "debuginfo=0", "-o", "prog"]
TIMEOUT_SIGNALS = (signal.SIGXCPU,)


@dataclass
class Check:
    status: str  # one of STATUSES
    score: float  # 1.0 passed, 0.0 otherwise (a user's function may give anything in between)
    seconds: float
    detail: str = ""  # the first lines of the compiler's or the tests' output, for a reader of the results

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def rust_program(prompt: str, completion: str, test: str = "") -> str:
    """The program a Rust check builds: the task's prefix, the completion, then its tests."""
    return prompt + completion + ("\n\n" + test if test else "\n")


def check_rust(source: str, run_tests: bool, timeout_s: float = 5.0) -> Check:
    """Build `source` (with its tests, and run them; or as a library, type-checked only) in the sandbox."""
    started = time.perf_counter()
    if run_tests:
        steps = [{"argv": RUSTC + ["--test", "main.rs"], "limits": COMPILE_LIMITS},
                 {"argv": ["./prog", "--test-threads=1", "-q"], "env": {"RUST_BACKTRACE": "0"},
                  "limits": Limits(timeout_s=timeout_s, cpu_s=int(math.ceil(timeout_s)) + 1)}]
    else:
        steps = [{"argv": RUSTC[:-2] + ["--crate-type", "lib", "--emit=metadata", "main.rs"], "limits": COMPILE_LIMITS}]
    report = run({"main.rs": source}, steps, toolchain=rust_toolchain())
    results = report["steps"]
    status = _status(results, len(steps))
    last = results[-1]
    detail = "\n".join((last.get("stderr") or last.get("stdout") or "").strip().splitlines()[:12])
    return Check(status, 1.0 if status == "passed" else 0.0, round(time.perf_counter() - started, 3), detail)


def _status(results: List[Dict[str, Any]], n_steps: int) -> str:
    for index, step in enumerate(results):
        if step.get("error"):
            raise RuntimeError(f"the sandbox could not run a check: {step['error']}")
        if step["timed_out"] or step.get("signal") in TIMEOUT_SIGNALS:
            return "timeout"
        if "signal" in step:
            return "sandbox_killed"
        if step.get("exit_code") != 0:
            return "compile_error" if index == 0 else "failed"
    return "passed" if len(results) == n_steps else "failed"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _exact_match(completion: str, record: Mapping[str, Any]) -> float:
    return float(" ".join(completion.split()) == " ".join(str(record.get("answer", "")).split()))


def _regex(completion: str, record: Mapping[str, Any]) -> float:
    return float(re.search(str(record.get("pattern", "")), completion) is not None)


def user_function(spec: str, kind: str = "verifier") -> Callable[..., Any]:
    """`pkg.module:function` -> the function (UserError naming what is wrong; kind: what the user called it)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise UserError(f"{kind} {spec!r}: name one of {', '.join(BUILT_IN)} or a function as pkg.module:function")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise UserError(f"{kind} {spec!r} cannot be loaded ({err}): check the module is importable on every "
                        "node and the function exists") from None
    if not callable(fn):
        raise UserError(f"{kind} {spec!r} is not a function")
    return fn


def check_one(verifier: str, record: Mapping[str, Any], completion: str, timeout_s: float = 5.0) -> Check:
    """Check one completion of one record (a benchmark task or prompt file row) with `verifier`."""
    started = time.perf_counter()
    if verifier == "rust_tests":
        return check_rust(rust_program(record["prompt"], completion, record["test"]), True, timeout_s)
    if verifier == "rust_compiles":
        return check_rust(rust_program(_text(record.get("prompt")), completion), False, timeout_s)
    if verifier in ("exact_match", "regex"):
        score = (_exact_match if verifier == "exact_match" else _regex)(completion, record)
    else:
        columns = {k: v for k, v in record.items() if k != "prompt"}
        try:
            score = float(user_function(verifier)(record.get("prompt"), completion, **columns))
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - a user's function that raises scores 0, and says why
            return Check("failed", 0.0, round(time.perf_counter() - started, 3), f"{type(err).__name__}: {err}")
        if not math.isfinite(score):
            return Check("failed", 0.0, round(time.perf_counter() - started, 3), f"returned {score}")
    return Check("passed" if score >= 1.0 else "failed", score, round(time.perf_counter() - started, 3))


def check_many(verifier: str, items: List[Dict[str, Any]], timeout_s: float = 5.0, cpus_per_check: float = 1.0,
               batch: int = 4) -> List[Check]:
    """Check many (record, completion) items as Ray tasks over the cluster's CPUs, in order.

    items: [{"record": {...}, "completion": "..."}]. cpus_per_check: what each task reserves (0 inside a training
    run, whose workers hold the cores while they wait for the checks)."""
    import ray

    if not items:
        return []
    if verifier not in BUILT_IN:
        user_function(verifier)  # a bad name fails here, in one line, before any task starts
    if verifier.startswith("rust_"):
        rust_toolchain()
    task = ray.remote(num_cpus=cpus_per_check, max_retries=0)(_check_batch)
    # at most one task per CPU of the cluster at once: tasks that reserve no CPU would otherwise all start together
    limit = max(1, int(ray.cluster_resources().get("CPU", 1)))
    refs, pending = [], []
    for start in range(0, len(items), batch):
        if len(pending) >= limit:
            _, pending = ray.wait(pending, num_returns=1)
        refs.append(task.remote(verifier, items[start:start + batch], timeout_s))
        pending.append(refs[-1])
    return [Check(**c) for part in ray.get(refs) for c in part]


def _check_batch(verifier: str, items: List[Dict[str, Any]], timeout_s: float) -> List[Dict[str, Any]]:
    return [check_one(verifier, item["record"], item["completion"], timeout_s).to_dict() for item in items]
