"""Driver side of `rtune train`: validate, prepare data, start Ray, fit, summarise.

Everything a user can get wrong is checked here, before a Ray worker starts: the config, the model
(hub reachable, context long enough), the data (path, field, non-empty, enough blocks), storage.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

from rtune.config import ConfigError, RTuneConfig, finalize, is_uri, to_dict, validate
from rtune.metrics import METRICS_FILE, plot_losses

SUMMARY_FILE = "summary.json"
LOSS_PNG = "loss_curve.png"


def _check_storage(cfg: RTuneConfig) -> Optional[str]:
    """The local run directory, created and proven writable (None for URI storage)."""
    if is_uri(cfg.storage_path):
        return None
    run_dir = os.path.join(cfg.storage_path, cfg.run_name)
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise ConfigError(f"storage_path {cfg.storage_path} is not writable ({err.strerror}): "
                          "set storage_path=<a writable directory>") from None
    return run_dir


def preflight(cfg: RTuneConfig):
    """All driver-side checks and data preparation; returns (PreparedData, run_dir)."""
    from rtune.data import prepare_data
    from rtune.model import load_model_config, max_context

    validate(cfg)
    finalize(cfg)
    model_config = load_model_config(cfg.model)  # fails fast (one line) when the hub is unreachable
    context = max_context(model_config)
    if context is not None and cfg.data.seq_len > context:
        raise ConfigError(f"data.seq_len={cfg.data.seq_len} is longer than the model's context of {context} "
                          f"tokens: set data.seq_len={context} or less")
    prepared, _ = prepare_data(cfg)
    per_worker = prepared.train_blocks // cfg.num_workers
    if per_worker < cfg.trainer.micro_batch_size:
        raise ConfigError(f"the training split has {prepared.train_blocks} blocks of {cfg.data.seq_len} tokens, "
                          f"{per_worker} per worker, fewer than trainer.micro_batch_size="
                          f"{cfg.trainer.micro_batch_size}: use more data, a smaller data.seq_len, micro batch or "
                          "num_workers")
    run_dir = _check_storage(cfg)
    return prepared, run_dir


def worker_env(use_gpu: bool) -> Dict[str, str]:
    """Environment for every Ray process rtune starts."""
    env = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "TOKENIZERS_PARALLELISM": "false"}
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"  # deepspeed (imported by transformers) stops probing for GPUs
    return env


def init_local_ray(num_cpus: int, use_gpu: bool = False) -> None:
    """Start a local Ray with the dashboard on loopback (without it Ray logs an error every 2 s)."""
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": worker_env(use_gpu)}, logging_level="warning")


def _init_ray(cfg: RTuneConfig) -> bool:
    """Join the cluster named by ray_address / RAY_ADDRESS, or start a local one on 127.0.0.1.

    Returns True when this call started Ray (and so should shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": worker_env(cfg.use_gpu)}, logging_level="warning")
    else:
        init_local_ray(max(os.cpu_count() or 1, cfg.num_workers * cfg.cpus_per_worker), cfg.use_gpu)
    return True


def _summarize(cfg: RTuneConfig, result, run_dir: Optional[str], wall_s: float) -> Dict[str, Any]:
    returned = getattr(result, "return_value", None) or {}
    best = None
    ranked = [(m["eval_loss"], c.path) for c, m in (result.best_checkpoints or []) if m.get("eval_loss") is not None]
    if ranked:
        best = min(ranked)[1]
    latest_metrics = result.metrics or {}
    summary = {
        "run_name": cfg.run_name,
        "run_dir": run_dir or f"{cfg.storage_path}/{cfg.run_name}",
        "best_checkpoint": best,
        "latest_checkpoint": result.checkpoint.path if result.checkpoint else None,
        "final_step": returned.get("final_step", latest_metrics.get("step")),
        "eval_loss": returned.get("eval_loss", latest_metrics.get("eval_loss")),
        "initial_eval_loss": None,
        "steady_tokens_per_s": returned.get("steady_tokens_per_s"),
        "trainable_params": returned.get("trainable_params"),
        "num_workers": cfg.num_workers,
        "wall_s": round(wall_s, 1),
    }
    if run_dir:
        from rtune.metrics import read_metrics

        metrics_path = os.path.join(run_dir, METRICS_FILE)
        if os.path.exists(metrics_path):
            evals = [r["eval_loss"] for r in read_metrics(metrics_path) if r.get("step") == 0 and "eval_loss" in r]
            summary["initial_eval_loss"] = evals[0] if evals else None
            summary["loss_curve"] = plot_losses(metrics_path, os.path.join(run_dir, LOSS_PNG),
                                                f"rtune {cfg.run_name}")
        with open(os.path.join(run_dir, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def resume_command(cfg: RTuneConfig) -> str:
    return f"python -m rtune train <same overrides> run_name={cfg.run_name} storage_path={cfg.storage_path}"


def train(cfg: RTuneConfig) -> Dict[str, Any]:
    """Run one fine-tune end to end; returns (and writes) the summary."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from rtune.loop import train_loop_per_worker

    start = time.perf_counter()
    prepared, run_dir = preflight(cfg)
    print(f"[rtune] run {cfg.run_name}: {prepared.train_documents} train / {prepared.val_documents} val documents,"
          f" {prepared.train_tokens:,} / {prepared.val_tokens:,} tokens -> {run_dir or cfg.storage_path}", flush=True)
    started_ray = _init_ray(cfg)
    try:
        resources = {"CPU": cfg.cpus_per_worker}
        if cfg.use_gpu:
            resources["GPU"] = 1
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": to_dict(cfg), "data": prepared.to_dict()},
            scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(
                name=cfg.run_name,  # the same name + storage resumes (Ray Train V2)
                storage_path=cfg.storage_path,
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.trainer.keep_checkpoints,
                                                   checkpoint_score_attribute="eval_loss",
                                                   checkpoint_score_order="min"),
                failure_config=FailureConfig(max_failures=cfg.trainer.max_failures),
            ),
        )
        try:
            result = trainer.fit()
        except Exception as err:  # TrainingFailedError wraps the worker's exception
            raise TrainingFailed(cfg, err) from err
        return _summarize(cfg, result, run_dir, time.perf_counter() - start)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


class TrainingFailed(RuntimeError):
    """Training itself failed (after the preflight); the checkpoints written so far are kept."""

    def __init__(self, cfg: RTuneConfig, err: Exception):
        root = err
        while getattr(root, "__cause__", None) is not None:
            root = root.__cause__
        first = (str(root).strip().splitlines() or [type(root).__name__])[-1]
        super().__init__(f"training failed: {type(root).__name__}: {first[:300]}. Checkpoints written so far are "
                         f"kept; resume with: {resume_command(cfg)}")


def format_summary(summary: Dict[str, Any]) -> str:
    lines = ["", "rtune summary", "-------------"]
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4f}" if key.endswith("loss") else f"{value:,.1f}"
        lines.append(f"{key:20s} {value}")
    return "\n".join(lines)

