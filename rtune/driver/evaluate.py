"""`rtune eval`: generate completions for a benchmark's tasks on the cluster, check them in the sandbox as Ray
tasks, and report pass@k.

    rtune eval <checkpoint | model dir | hub id> [more ...] benchmark=rust_eval samples=10 k=[1,5,10] temperature=0.8
    rtune eval --canonical benchmark=my_tasks.jsonl      # score the canonical solutions: is the benchmark sound?

Results go to `<storage_path>/<run_name>/`:

    eval_summary.json    pass@<k> for each k, tasks, samples, the model, the benchmark and its sha256, statuses
                         (several models: one such summary each under `models`)
    eval_results.jsonl   per task and model: task_id, n, correct, pass@k, and each sample's completion, status and
                         seconds
    pass_at_k.png        pass@k per k, the models side by side
    generations/         the completions, in shards a re-run of the same eval skips
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Dict, List

from rtune.config import RTuneConfig, validate
from rtune.data.benchmarks import COMPLETION_STOP, Benchmark, load_benchmark, prompt_text, to_check
from rtune.driver.cluster import connect
from rtune.driver.generation import generate_shards, read_shards
from rtune.driver.plots import plot_pass_at_k
from rtune.driver.preflight import finalize
from rtune.engine import Sampling
from rtune.errors import UserError
from rtune.passk import mean_pass_at_k
from rtune.verifiers import check_many

SUMMARY = "eval_summary.json"
RESULTS = "eval_results.jsonl"
PLOT = "pass_at_k.png"
CANONICAL = "canonical"


def model_label(model: str) -> str:
    """A short, file-safe name of a model: `run/checkpoint_000100`, `export-dir`, `org--name`."""
    parts = os.path.normpath(model).split(os.sep)
    label = "/".join(parts[-2:]) if parts[-1].startswith("checkpoint_") else parts[-1]
    return re.sub(r"[^A-Za-z0-9._=+-]+", "--", label)


def expand_models(paths: List[str]) -> List[str]:
    """A run directory stands for its checkpoints (oldest first); anything else is one model."""
    models = []
    for path in paths:
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")) and \
                not os.path.exists(os.path.join(path, "adapter_config.json")):
            from rtune import checkpoint as ckpt

            found = [d for _, d in ckpt.list_checkpoints(path)]
            if not found:
                raise UserError(f"{path} holds no checkpoint_<step> directories and no model: give a checkpoint, a "
                                "model directory, a run directory or a hub id")
            models += found
        else:
            models.append(os.path.abspath(path) if os.path.exists(path) else path)
    return models


def run_eval(cfg: RTuneConfig, models: List[str], canonical: bool = False) -> Dict[str, Any]:
    """Evaluate each model (or the canonical solutions) on cfg.eval's benchmark; writes and returns the summary."""
    e = cfg.eval
    if not cfg.run_name:
        cfg.run_name = f"eval-{os.path.splitext(os.path.basename(e.benchmark))[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
    validate(cfg)
    finalize(cfg)
    if e.harness == "lm_eval":
        from rtune.driver.harness import run_lm_eval

        return run_lm_eval(cfg, models)
    if canonical:
        models = [CANONICAL]
    elif not models:
        raise UserError("rtune eval needs a model: a checkpoint, a model directory, a run directory or a hub id "
                        "(or --canonical to score the benchmark's canonical solutions)")
    else:
        models = expand_models(models)
    benchmark = load_benchmark(e.benchmark, e.max_tasks, need_canonical=canonical)
    run_dir = os.path.join(cfg.storage_path, cfg.run_name)
    os.makedirs(run_dir, exist_ok=True)
    connect(cfg, driver_progress=False)
    summaries, rows = [], []
    for model in models:
        summary, results = _evaluate(cfg, benchmark, model, run_dir)
        summaries.append(summary)
        rows += results
        print(f"[rtune] {summary['model']}: " + ", ".join(f"{k} {summary[k]:.3f}" for k in _pass_keys(e.k))
              + f" ({summary['tasks']} tasks x {summary['samples']} samples; {_statuses_line(summary)})", flush=True)
    with open(os.path.join(run_dir, RESULTS), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    report = summaries[0] if len(summaries) == 1 else {
        "benchmark": benchmark.name, "benchmark_sha256": benchmark.sha256, "tasks": len(benchmark.tasks),
        "samples": e.samples if not canonical else 1, "models": summaries}
    report["plot"] = plot_pass_at_k(summaries, _pass_keys(e.k), os.path.join(run_dir, PLOT),
                                    f"{benchmark.name}: pass@k")
    report["run_dir"] = run_dir
    with open(os.path.join(run_dir, SUMMARY), "w") as f:
        json.dump(report, f, indent=2)
    if canonical:
        failing = [r["task_id"] for r in rows if not r["correct"]]
        if failing:
            print(f"[rtune] {len(failing)} canonical solution(s) do not pass: {', '.join(failing)}", flush=True)
    return report


def _pass_keys(ks: List[int]) -> List[str]:
    return [f"pass@{k}" for k in ks]


def _statuses_line(summary: Dict[str, Any]) -> str:
    return ", ".join(f"{n} {status}" for status, n in summary["statuses"].items() if n)


def _evaluate(cfg: RTuneConfig, benchmark: Benchmark, model: str, run_dir: str):
    """(summary, per-task rows) of one model."""
    e = cfg.eval
    started = time.perf_counter()
    if model == CANONICAL:
        samples = [[(task, task["canonical_solution"])] for task in benchmark.tasks]
        generation: Dict[str, Any] = {}
    else:
        samples, generation = _generate(cfg, benchmark, model, run_dir)
    items = [{"record": record, "completion": completion} for per_task in samples for record, completion in per_task]
    checks = check_many(e.verifier, items, e.timeout_s)
    rows, counts, at = [], [], 0
    for task, per_task in zip(benchmark.tasks, samples):
        mine = checks[at:at + len(per_task)]
        at += len(per_task)
        correct = sum(c.status == "passed" for c in mine)
        counts.append((len(mine), correct))
        rows.append({"model": model, "task_id": task["task_id"], "n": len(mine), "correct": correct,
                     **mean_pass_at_k([(len(mine), correct)], [k for k in e.k if k <= len(mine)]),
                     "samples": [{"completion": completion, "status": c.status, "seconds": c.seconds,
                                  **({"detail": c.detail} if c.status != "passed" and c.detail else {})}
                                 for (_, completion), c in zip(per_task, mine)]})
    n = counts[0][0] if counts else 0
    statuses = {status: sum(c.status == status for c in checks) for status in
                ("passed", "failed", "compile_error", "timeout", "sandbox_killed")}
    summary = {"model": model, **mean_pass_at_k(counts, [k for k in e.k if k <= n]), "tasks": len(counts),
               "samples": n, "benchmark": benchmark.name, "benchmark_path": benchmark.path,
               "benchmark_sha256": benchmark.sha256, "verifier": e.verifier, "prompt_style": e.prompt_style,
               "temperature": e.temperature, "top_p": e.top_p, "max_new_tokens": e.max_new_tokens, "seed": e.seed,
               "statuses": statuses, "check_seconds": round(sum(c.seconds for c in checks), 2),
               "generation": generation, "seconds": round(time.perf_counter() - started, 2)}
    return summary, rows


def _generate(cfg: RTuneConfig, benchmark: Benchmark, model: str, run_dir: str):
    """Completions of every task (its prompt, e.samples times) from the cluster's engine actors, as
    (task as its check reads it, completion) pairs; the shards stay under run_dir/generations/."""
    e = cfg.eval
    stop = (COMPLETION_STOP,) if e.prompt_style == "completion" else ()
    sampling = Sampling(max_new_tokens=e.max_new_tokens, temperature=e.temperature, top_p=e.top_p, n=e.samples,
                        seed=e.seed, stop=stop)
    prompts = [{"task_id": task["task_id"], "prompt": prompt_text(task, e.prompt_style)} for task in benchmark.tasks]
    out_dir = os.path.join(run_dir, "generations", model_label(model))
    report = generate_shards(cfg, model, prompts, out_dir, sampling, chat=e.prompt_style == "chat",
                             identity={"benchmark_sha256": benchmark.sha256})
    generated = read_shards(out_dir)
    samples = [[to_check(task, c["text"], e.prompt_style, c["stop_reason"]) for c in row["completions"]]
               for task, row in zip(benchmark.tasks, generated)]
    return samples, report


def parse_eval_args(args: List[str]):
    """(model paths, --canonical, overrides): `eval.` is implied for the eval keys' short forms."""
    short = {"benchmark", "verifier", "samples", "k", "temperature", "top_p", "max_new_tokens", "max_tasks",
             "prompt_style", "timeout_s", "seed", "harness", "tasks"}
    models, overrides, canonical = [], [], False
    for arg in args:
        if arg == "--canonical":
            canonical = True
        elif "=" in arg:
            key = arg.split("=", 1)[0].lstrip("+")
            overrides.append(f"eval.{arg}" if key in short else arg)
        elif arg.startswith("-"):
            raise UserError(f"unknown option {arg}: rtune eval takes model paths, --canonical and KEY=VALUE")
        else:
            models.append(arg)
    return models, canonical, overrides


def print_summary(report: Dict[str, Any]) -> None:
    lines = ["", "rtune eval", "----------"]
    if report.get("harness"):
        for task, metrics in report["tasks"].items():
            lines.append(f"{task}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    for summary in report.get("models", [report] if not report.get("harness") else []):
        scores = "  ".join(f"{k} {v:.3f}" for k, v in summary.items() if k.startswith("pass@"))
        lines.append(f"{summary['model']}: {scores}")
    lines.append(f"results: {report['run_dir']}")
    print("\n".join(lines), flush=True)
