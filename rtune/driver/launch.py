"""Driver side of `rtune train`: the preflight (`preflight.py`), then Ray (`cluster.py`), `TorchTrainer.fit`,
the summary, plots and trackers' final artifacts."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

from rtune import checkpoint as ckpt
from rtune import tracking
from rtune.config import RTuneConfig, to_dict, worker_range
from rtune.driver import local_ray
from rtune.driver.cluster import check_cluster_storage, connect, on_local_cluster
from rtune.driver.plots import plot_losses
from rtune.driver.preflight import describe_data, driver_progress, preflight
from rtune.driver.progress import DriverProgress
from rtune.driver.resources import resolve_cpus_per_worker
from rtune.driver.rollout_pool import start_pool, stop_pool
from rtune.errors import UserError, user_error_in
from rtune.inference import model_card
from rtune.metrics import METRICS_FILE, read_metrics
from rtune.worker.loop import train_loop_per_worker

SUMMARY_FILE = "summary.json"
LOSS_PNG = "loss_curve.png"


def _scaling_workers(cfg: RTuneConfig):
    """Ray's num_workers: an int, or (min, max) for an elastic group."""
    lo, hi = worker_range(cfg)
    return lo if lo == hi else (lo, hi)


def _summarize(cfg: RTuneConfig, result, run_dir: Optional[str], wall_s: float, packing: float) -> Dict[str, Any]:
    returned = getattr(result, "return_value", None) or {}
    best = None
    metric, mode = cfg.trainer.checkpoint_metric, cfg.trainer.checkpoint_mode
    ranked = [(m[metric], c.path) for c, m in (result.best_checkpoints or []) if m.get(metric) is not None]
    if ranked:
        best = (min if mode == "min" else max)(ranked)[1]
    latest_metrics = result.metrics or {}
    summary = {
        "run_name": cfg.run_name,
        "run_dir": run_dir or f"{cfg.storage_path}/{cfg.run_name}",
        "best_checkpoint": best,
        "latest_checkpoint": result.checkpoint.path if result.checkpoint else None,
        "final_step": returned.get("final_step", latest_metrics.get("step")),
        "eval_loss": returned.get("eval_loss", latest_metrics.get("eval_loss")),
        "initial_eval_loss": None,
        # the last evaluation's other metrics (eval_ppl, DPO's eval_reward_accuracy, ...): what a sweep or a
        # search ranks by when it meets this run again
        **{k: v for k, v in latest_metrics.items() if k.startswith("eval_") and k != "eval_loss"},
        "steady_tokens_per_s": returned.get("steady_tokens_per_s"),
        "steady_target_tokens_per_s": returned.get("steady_target_tokens_per_s"),
        "steady_mfu": returned.get("steady_mfu"),
        "mfu_peak_source": returned.get("mfu_peak_source"),
        "trainable_params": returned.get("trainable_params"),
        "total_params": returned.get("total_params"),
        "train_peak_rss_mb_per_worker": [round(m) for m in returned.get("train_peak_rss_mb_per_worker") or []],
        "peak_rss_mb_per_worker": [round(m) for m in returned.get("peak_rss_mb_per_worker") or []],
        # each worker's resident set before the first checkpoint and its peak while writing it
        "checkpoint_rss_mb_per_worker": [{k: round(v) for k, v in m.items()}
                                         for m in returned.get("checkpoint_rss_mb_per_worker") or []],
        # each worker's resident set before it built (and sharded) the model, its peak meanwhile, and the frozen
        # weights' share (MB)
        "load_rss_mb_per_worker": [{k: round(v) for k, v in m.items()}
                                   for m in returned.get("load_rss_mb_per_worker") or []],
        "num_workers": cfg.num_workers,
        "packing_non_pad_fraction": round(packing, 5),
        "wall_s": round(wall_s, 1),
    }
    if cfg.objective.name == "grpo":  # rollouts: no validation loss, no packed rows
        for key in ("eval_loss", "initial_eval_loss", "packing_non_pad_fraction"):
            summary.pop(key)
    if run_dir:
        metrics_path = os.path.join(run_dir, METRICS_FILE)
        if os.path.exists(metrics_path):
            records = read_metrics(metrics_path)
            for key in ("eval_loss", "eval_reward"):  # where the eval curve started
                first = [r[key] for r in records if r.get("step") == 0 and key in r]
                if first or key in summary:
                    summary[f"initial_{key}"] = first[0] if first else None
            summary["loss_curve"] = plot_losses(metrics_path, os.path.join(run_dir, LOSS_PNG),
                                                f"rtune {cfg.run_name}")
        with open(os.path.join(run_dir, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def ckpt_step(checkpoint: Optional[str]) -> Optional[int]:
    return ckpt.read_marker(checkpoint)["step"] if checkpoint else None


def where_things_go(cfg: RTuneConfig, run_dir: Optional[str]) -> str:
    """One line: where this run's metrics, checkpoints, plots and tracker runs are written."""
    root = run_dir or f"{cfg.storage_path.rstrip('/')}/{cfg.run_name}"
    parts = [f"metrics {root}/{METRICS_FILE}", f"checkpoints {root}/checkpoint_*", f"summary + plot {root}/"]
    if "tensorboard" in cfg.tracking.backends and run_dir:
        parts.append(f"TensorBoard: tensorboard --logdir {run_dir}/tensorboard")
    if "mlflow" in cfg.tracking.backends:
        parts.append(f"MLflow: experiment {tracking.project_of(cfg)} at {tracking.redact(tracking.mlflow_uri(cfg))} "
                     "(run id in the start line)")
    if "wandb" in cfg.tracking.backends:
        parts.append(f"W&B: project {tracking.project_of(cfg)}")
    return "writing " + " | ".join(parts)


def _finish_tracking(cfg: RTuneConfig, run_dir: Optional[str], summary: Dict[str, Any]) -> None:
    """Summary, loss curve and model card into the tracker runs (the best checkpoint too with log_model)."""
    if not run_dir or not set(cfg.tracking.backends) & {"mlflow", "wandb"}:
        return
    best = summary.get("best_checkpoint") or summary.get("latest_checkpoint")
    card = os.path.join(run_dir, "MODEL_CARD.md")
    if best and os.path.isdir(best):
        with open(card, "w") as f:
            f.write(model_card(to_dict(cfg), ckpt.read_marker(best), cfg.peft.method if cfg.peft.adapters else "full"))
    files = [os.path.join(run_dir, name) for name in (SUMMARY_FILE, LOSS_PNG, "MODEL_CARD.md")]
    tracking.finish(cfg, run_dir, summary, files, best if best and os.path.isdir(best) else None)


def resume_command(cfg: RTuneConfig) -> str:
    return f"python -m rtune train <same overrides> run_name={cfg.run_name} storage_path={cfg.storage_path}"


def train(cfg: RTuneConfig, keep_ray: bool = False, callbacks: Optional[list] = None) -> Dict[str, Any]:
    """Run one fine-tune end to end; returns (and writes) the summary.

    keep_ray leaves a local cluster this call started running for the next call (multirun sweeps
    reuse one warm cluster instead of paying Ray's start-up for every job). callbacks go to Ray
    Train's RunConfig (a Tune trial passes TuneReportCallback).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer


    start = time.perf_counter()
    prepared, run_dir, resume_from, started_ray = preflight(cfg)
    packing = prepared.train_fill
    print(f"[rtune] run {cfg.run_name}: {describe_data(prepared)}", flush=True)
    print(f"[rtune] {where_things_go(cfg, run_dir)}", flush=True)
    # On a local cluster the driver reads rank 0's metrics from disk; elsewhere rank 0 prints them.
    show_progress = driver_progress(cfg, run_dir)
    started_ray = connect(cfg, show_progress) or started_ray  # a local Ray was sized by the preflight
    resolve_cpus_per_worker(cfg)  # a joined cluster: what its nodes offer
    check_cluster_storage(cfg.storage_path)
    resume_step = ckpt_step(resume_from)
    progress = (DriverProgress(run_dir, cfg.trainer.max_steps, resume_step=resume_step)
                if show_progress and on_local_cluster() else None)
    actors: list = []
    try:
        if cfg.objective.name == "grpo" and cfg.rollout.engine == "actors":  # beside the workers, for the whole run
            actors = start_pool(cfg, prepared)
        resources = {"CPU": cfg.cpus_per_worker}
        if cfg.use_gpu:
            resources["GPU"] = 1
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": to_dict(cfg), "data": prepared.to_dict(), "echo_progress": progress is None,
                               "rollout_actors": actors},
            scaling_config=ScalingConfig(num_workers=_scaling_workers(cfg), use_gpu=cfg.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(
                name=cfg.run_name,  # the same name + storage resumes (Ray Train V2)
                storage_path=cfg.storage_path,
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.trainer.keep_checkpoints,
                                                   checkpoint_score_attribute=cfg.trainer.checkpoint_metric,
                                                   checkpoint_score_order=cfg.trainer.checkpoint_mode),
                failure_config=FailureConfig(max_failures=cfg.trainer.max_failures),
                callbacks=callbacks,
            ),
        )
        if progress is not None:
            progress.start()
        try:
            result = trainer.fit()
        except (KeyboardInterrupt, SystemExit):  # Ray's SIGINT handler aborts the run, then exits
            tracking.finish(cfg, run_dir, {}, [], None, status="KILLED")
            raise Interrupted(cfg) from None
        except Exception as err:  # TrainingFailedError wraps the worker's exception
            tracking.finish(cfg, run_dir, {}, [], None, status="FAILED")
            mistake = user_error_in(err)  # a worker found something the user can fix: its one line
            if mistake is not None:
                raise UserError(str(mistake).splitlines()[0]) from None
            raise TrainingFailed(cfg, err) from err
        summary = _summarize(cfg, result, run_dir, time.perf_counter() - start, packing)
        _finish_tracking(cfg, run_dir, summary)
        return summary
    finally:
        if progress is not None:
            progress.stop()
        if actors:
            stop_pool(actors)
        if started_ray and not keep_ray:
            local_ray.shutdown()


class TrainingFailed(RuntimeError):
    """Training itself failed (after the preflight); the checkpoints written so far are kept."""

    def __init__(self, cfg: RTuneConfig, err: Exception):
        root = err
        while getattr(root, "__cause__", None) is not None:
            root = root.__cause__
        first = (str(root).strip().splitlines() or [type(root).__name__])[-1]
        super().__init__(f"training failed: {type(root).__name__}: {first[:300]}. Checkpoints written so far are "
                         f"kept; resume with: {resume_command(cfg)}")


class Interrupted(RuntimeError):
    """Ctrl-C: Ray aborted the workers; what was checkpointed is kept."""

    def __init__(self, cfg: RTuneConfig):
        super().__init__(f"interrupted; the workers were stopped and checkpoints written so far are kept. "
                         f"Resume with: {resume_command(cfg)}")


def format_summary(summary: Dict[str, Any]) -> str:
    lines = ["", "rtune summary", "-------------"]
    for key, value in summary.items():
        if isinstance(value, float):
            if key.endswith("loss") or key.startswith(("eval_", "initial_eval_")):
                value = f"{value:.4f}"
            elif key.endswith(("mfu", "fraction")):
                value = f"{100 * value:.2f}%"
            else:
                value = f"{value:,.1f}"
        lines.append(f"{key:27s} {value}")
    return "\n".join(lines)

