"""`python -m rtune tune`: a Ray Tune search over rtune runs, with early stopping (ASHA).

Ray 2.60 with Train V2 tunes a *driver function*: each Tune trial is a small actor that runs an
ordinary rtune `train()` (its own TorchTrainer and worker group) with the trial's sampled values;
`TuneReportCallback` hands every `ray.train.report` (one per evaluation) to Tune, whose scheduler may
stop the trial. `Tuner(TorchTrainer(...))` is rejected by Ray 2.60.

Trials are ordinary runs under `<storage_path>/<sweep_name>/` with the same files as any run, and the
search ends in the same summary (CSV, Markdown, eval-loss plot) as a multirun sweep (rtune/driver/sweep.py).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
from typing import Any, Dict, List, Tuple

from rtune.config import RTuneConfig, from_dict, to_dict
from rtune.driver import local_ray
from rtune.driver.cluster import connect
from rtune.driver.launch import LOSS_PNG, SUMMARY_FILE, train
from rtune.driver.plots import plot_losses
from rtune.driver.preflight import preflight
from rtune.driver.resources import resolve_cpus_per_worker
from rtune.driver.sweep import is_finished, row, run_name_for, sweep_dir_for, sweep_name_for, write_summary
from rtune.errors import UserError
from rtune.metrics import METRICS_FILE

TRIAL_DRIVER_MEMORY = 512 * 1024**2  # bytes Ray reserves for each trial's driver process (it imports torch)
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")
_CALL = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$")


def parse_distribution(key: str, text: str) -> Tuple[str, List[Any]]:
    """`loguniform(1e-5,1e-3)` -> ("loguniform", [1e-5, 1e-3]), checked; UserError naming the fix."""
    match = _CALL.match(str(text))
    if not match or match.group(1) not in DISTRIBUTIONS:
        raise UserError(f"search.space[{key}]={text!r}: use one of {', '.join(d + '(...)' for d in DISTRIBUTIONS)}"
                        f", e.g. loguniform(1e-5,1e-3) or choice(8,16)")
    kind, body = match.groups()
    try:
        values = list(ast.literal_eval(f"[{body}]"))
    except (ValueError, SyntaxError):
        values = [v.strip() for v in body.split(",") if v.strip()]  # bare words: choice(none,lora)
    if kind in ("loguniform", "uniform", "randint"):
        if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values) or not values[0] < values[1]:
            raise UserError(f"search.space[{key}]={text!r}: {kind} needs two numbers lo < hi, e.g. {kind}(1, 4)")
        if kind == "loguniform" and values[0] <= 0:
            raise UserError(f"search.space[{key}]={text!r}: loguniform needs lo > 0")
    elif not values:
        raise UserError(f"search.space[{key}]={text!r}: {kind} needs at least one value")
    return kind, values


def check_search(cfg: RTuneConfig) -> Dict[str, Tuple[str, List[Any]]]:
    """Validate cfg.search and every sampled key (a trial with a bad value must not be the first to find out)."""
    s = cfg.search
    if not s.space:
        raise UserError("tune needs a search space: 'search.space={optim.lr: \"loguniform(1e-5,1e-3)\"}'")
    if s.scheduler not in ("asha", "fifo"):
        raise UserError(f"search.scheduler must be asha or fifo, got {s.scheduler!r}")
    if s.mode not in ("min", "max"):
        raise UserError(f"search.mode must be min or max, got {s.mode!r}")
    for key, value in {"search.num_samples": s.num_samples, "search.max_concurrent": s.max_concurrent}.items():
        if value < 1:
            raise UserError(f"{key} must be at least 1, got {value}")
    if s.reduction_factor < 2:
        raise UserError(f"search.reduction_factor must be at least 2, got {s.reduction_factor}")
    space = {key: parse_distribution(key, text) for key, text in s.space.items()}
    base = to_dict(cfg)
    for key, (kind, values) in space.items():
        for value in values if kind in ("choice", "grid") else values[:1]:
            apply_params(base, {key: value})  # raises for unknown keys and wrong types
    return space


def apply_params(base: Dict[str, Any], params: Dict[str, Any]) -> RTuneConfig:
    """The typed config with sampled values set at dotted keys (type-checked by the schema)."""
    raw = copy.deepcopy(base)
    for key, value in params.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise UserError(_unknown_key(key))
            node = node[part]
        if leaf not in node:
            raise UserError(_unknown_key(key))
        node[leaf] = value
    try:
        return from_dict(raw)
    except Exception as err:
        raise UserError(f"search.space gives a value the config refuses: {str(err).splitlines()[0]}") from None


def _unknown_key(key: str) -> str:
    return f"search.space key {key!r} is not a config key (see `python -m rtune train --cfg job`)"


def tune_space(space: Dict[str, Tuple[str, List[Any]]]) -> Dict[str, Any]:
    from ray import tune

    makers = {"loguniform": lambda v: tune.loguniform(*v), "uniform": lambda v: tune.uniform(*v),
              "randint": lambda v: tune.randint(*v), "choice": tune.choice, "grid": tune.grid_search}
    return {key: makers[kind](values) for key, (kind, values) in space.items()}


def _format_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_run_name(index: int, params: Dict[str, Any]) -> str:
    return run_name_for([f"{k}={_format_value(v)}" for k, v in params.items()], prefix=f"trial{index:03d}-")


def _trial(config: Dict[str, Any], base: Dict[str, Any]) -> None:
    """One Tune trial: an ordinary rtune run with the sampled values; reports reach Tune per evaluation."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    params = config["params"]
    cfg = apply_params(base, params)
    index = int(tune.get_context().get_trial_id().rsplit("_", 1)[-1])
    cfg.run_name = trial_run_name(index, params)
    done = is_finished(os.path.join(cfg.storage_path, cfg.run_name), cfg.trainer.max_steps)
    if done is not None:  # the same search run again: a finished trial reports its result, trains nothing
        tune.report({"step": done["final_step"], cfg.search.metric: done.get(cfg.search.metric)})
        return
    train(cfg, callbacks=[TuneReportCallback()])


def run_search(cfg: RTuneConfig) -> int:
    """Run the search, write the sweep summary, print the best trial. Exit code 1 if every trial failed."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    space = check_search(cfg)
    if cfg.sweep_name is None:  # the whole config names the search, wherever it is stored
        defining = {k: v for k, v in to_dict(cfg).items() if k not in ("storage_path", "ray_address")}
        cfg.sweep_name = sweep_name_for([json.dumps(defining, sort_keys=True)])
    cfg.storage_path = sweep_dir_for(cfg.storage_path, cfg.sweep_name)
    cfg.run_name = "tune"  # Tune's own directory
    _refuse_second_local_cluster(cfg)
    # config, model, data (cached for every trial), storage: fail here, not in 8 trials
    *_, started_for_data = preflight(cfg, cfg.search.max_concurrent)
    cfg.run_name = None
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's table of trials, not its verbose per-report lines
    started = connect(cfg, driver_progress=False) or started_for_data  # a local Ray was sized by the preflight
    resolve_cpus_per_worker(cfg, concurrent_runs=cfg.search.max_concurrent)
    s, t = cfg.search, cfg.trainer
    grace = s.grace_period_steps or 2 * t.eval_every_steps
    scheduler = (ASHAScheduler(time_attr="step", max_t=t.max_steps, grace_period=min(grace, t.max_steps),
                               reduction_factor=s.reduction_factor)
                 if s.scheduler == "asha" else FIFOScheduler())
    base = to_dict(cfg)
    try:
        tuner = tune.Tuner(
            # The trial is only a driver: its training workers reserve their own CPUs/GPUs, so it asks for
            # memory alone (Tune refuses an all-zero request; a CPU would starve the workers of a small node).
            tune.with_resources(tune.with_parameters(_trial, base=base), {"CPU": 0, "memory": TRIAL_DRIVER_MEMORY}),
            param_space={"params": tune_space(space)},
            tune_config=tune.TuneConfig(metric=s.metric, mode=s.mode, num_samples=s.num_samples,
                                        max_concurrent_trials=s.max_concurrent, scheduler=scheduler,
                                        search_alg=BasicVariantGenerator(max_concurrent=s.max_concurrent,
                                                                         random_state=s.seed)),
            run_config=tune.RunConfig(name="tune", storage_path=cfg.storage_path, verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        results = tuner.fit()
    finally:
        if started:
            local_ray.shutdown()
    return _summarize(cfg, results)


def _refuse_second_local_cluster(cfg: RTuneConfig) -> None:
    """ASHA on a second local Ray would hang: refuse it, naming the cluster to join.

    With two Ray instances on one machine, Ray 2.60's Train placement-group cleaner cannot tell them apart
    ("Found multiple active Ray instances"), so a trial stopped early keeps its workers' CPUs and the
    next trials wait for them forever.
    """
    import ray
    from ray._private.services import find_gcs_addresses

    if ray.is_initialized() or cfg.ray_address or os.environ.get("RAY_ADDRESS") or cfg.search.scheduler != "asha":
        return
    if local_ray.kept_address() is not None:  # the cluster `rtune up` keeps: joined, not a second one
        return
    running = sorted(find_gcs_addresses())
    if running:
        raise UserError(f"a Ray cluster already runs on this machine ({', '.join(running)}); a second local one "
                        f"would leak the CPUs of trials ASHA stops: join it with ray_address={running[0]}")


def _trial_index(result) -> int:
    """The trial's number: the suffix of its id (`a1b2c_00003`), which is also in its directory name."""
    trial_id = (result.metrics or {}).get("trial_id")
    if trial_id:
        return int(str(trial_id).rsplit("_", 1)[-1])
    match = re.search(r"_[0-9a-f]{5}_(\d{5})", os.path.basename(result.path))
    return int(match.group(1)) if match else -1


def _write_run_files(run_dir: str, name: str, summary: Dict[str, Any]) -> None:
    """summary.json and loss_curve.png for a trial the scheduler ended before train() could write them."""
    if not os.path.isdir(run_dir):
        return
    with open(os.path.join(run_dir, SUMMARY_FILE), "w") as f:
        json.dump({"run_dir": run_dir, **summary}, f, indent=2)
    if os.path.exists(os.path.join(run_dir, METRICS_FILE)):
        plot_losses(os.path.join(run_dir, METRICS_FILE), os.path.join(run_dir, LOSS_PNG), f"rtune {name}")


def _summarize(cfg: RTuneConfig, results) -> int:
    rows = []
    for index, result in sorted(((_trial_index(r), r) for r in results), key=lambda pair: pair[0]):
        params = (result.config or {}).get("params", {})
        name = trial_run_name(index, params)
        run_dir = os.path.join(cfg.storage_path, name)
        overrides = " ".join(f"{k}={_format_value(v)}" for k, v in params.items())
        summary = is_finished(run_dir, cfg.trainer.max_steps)
        ranking = {"metric": cfg.search.metric, "mode": cfg.search.mode}
        if summary is not None:
            rows.append(row(name, overrides, "finished", summary, **ranking))
        elif result.error is not None:
            message = str(result.error).strip().splitlines()[-1][:300]
            rows.append(row(name, overrides, "failed", error=message, run_dir=run_dir, **ranking))
        else:  # the scheduler stopped it (at max_t too, before train() wrote its summary): write its files
            stopped = row(name, overrides, "stopped early", run_dir=run_dir, **ranking)
            if (stopped["final_step"] or 0) >= cfg.trainer.max_steps:
                stopped["status"] = "finished"
            else:
                stopped["error"] = f"stopped by {cfg.search.scheduler} at step {stopped['final_step']}"
            rows.append(stopped)
            _write_run_files(run_dir, name, stopped)
    metric = cfg.search.metric
    paths = write_summary(cfg.storage_path, rows, f"rtune tune {cfg.sweep_name} ({cfg.search.scheduler}, "
                                                  f"{metric} {cfg.search.mode})", metric, cfg.search.mode)
    scored = [r for r in rows if r["status"] != "failed" and r.get(metric) is not None]
    if scored:
        best = (min if cfg.search.mode == "min" else max)(scored, key=lambda r: r[metric])
        print(f"[rtune] best trial: {best['run_name']} {metric} {best[metric]:.4f} -> {best['best_checkpoint']}",
              flush=True)
    counts = {status: sum(r["status"] == status for r in rows) for status in dict.fromkeys(r["status"] for r in rows)}
    print(f"[rtune] tune {cfg.sweep_name}: {len(rows)} trials ({', '.join(f'{n} {s}' for s, n in counts.items())})"
          f" -> {paths['md']}", flush=True)
    return 1 if rows and all(r["status"] == "failed" for r in rows) else 0
