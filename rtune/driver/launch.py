"""Driver side of `rtune train`: validate, prepare data, start Ray, fit, summarise.

Everything a user can get wrong is checked here, before a Ray worker starts: the config, the model
(hub reachable, context long enough), the data (path, field, non-empty, enough blocks), storage.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

from rtune import tracking
from rtune.config import RTuneConfig, finalize, is_uri, max_workers, to_dict, validate, worker_range
from rtune.errors import UserError
from rtune.driver.plots import plot_losses
from rtune.driver.progress import DriverProgress
from rtune.metrics import METRICS_FILE, read_metrics

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
        raise UserError(f"storage_path {cfg.storage_path} is not writable ({err.strerror}): "
                        "set storage_path=<a writable directory>") from None
    return run_dir


def _check_deepspeed_toolchain() -> None:
    """DeepSpeed JIT-compiles its communication kernel on first use: it needs a C++ compiler and ninja."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("deepspeed") is None:
        raise UserError("strategy=deepspeed needs the deepspeed package: pip install deepspeed")
    if not (shutil.which("c++") or shutil.which("g++")):
        raise UserError("strategy=deepspeed builds a C++ kernel on first use and no C++ compiler was found: "
                        "install one (apt-get install g++) or use strategy=ddp / strategy=fsdp")
    if not shutil.which("ninja") and importlib.util.find_spec("ninja") is None:
        raise UserError("strategy=deepspeed needs ninja to build its kernel: pip install ninja")


def _resume_point(cfg: RTuneConfig, run_dir: Optional[str]) -> Optional[str]:
    """The checkpoint this run will resume from, checked before any worker starts (None: fresh)."""
    from rtune import checkpoint as ckpt

    if run_dir is None:
        return None
    latest, skipped = ckpt.scan(run_dir)
    for reason in skipped:
        print(f"[rtune] warning: skipping {reason}; it is left in place", flush=True)
    if latest is None:
        if skipped:
            raise UserError(f"run {cfg.run_name} has no intact checkpoint to resume from: move the damaged "
                                       "ones aside, or start a new run_name")
        return None
    ckpt.check_compatible(latest, to_dict(cfg))
    ckpt.load_trainer_state(latest, mmap=True)  # a tampered or corrupt state file is refused here
    step = ckpt.read_marker(latest)["step"]
    if step >= cfg.trainer.max_steps:
        raise UserError(f"run {cfg.run_name} already reached step {step} (trainer.max_steps={cfg.trainer.max_steps}):"
                        f" set trainer.max_steps above {step} to train on, or start a new run_name")
    print(f"[rtune] resuming run {cfg.run_name} from {latest} (step {step})", flush=True)
    return latest


def _driver_progress(cfg: RTuneConfig, run_dir: Optional[str]) -> bool:
    """Whether the driver shows rank 0's progress (read from disk) instead of streaming worker logs."""
    local_cluster = not (cfg.ray_address or os.environ.get("RAY_ADDRESS"))
    return run_dir is not None and local_cluster and os.environ.get("RTUNE_WORKER_LOGS") != "1"


def preflight(cfg: RTuneConfig, concurrent_runs: int = 1):
    """All driver-side checks and data preparation; returns (PreparedData, run_dir, the checkpoint to resume
    from, whether this call started Ray). data.engine=ray starts or joins the cluster here, to prepare the data.
    concurrent_runs: Tune trials that will share the cores."""
    from rtune.tracking import check_backends

    validate(cfg)
    finalize(cfg)
    check_backends(cfg)
    local_head = not (ray_initialized() or cfg.ray_address or os.environ.get("RAY_ADDRESS"))
    if local_head:  # the local Ray comes up in its own process while the checks and the data below run
        from rtune.driver import local_ray
        from rtune.driver.resources import resolve_cpus_per_worker

        resolve_cpus_per_worker(cfg, concurrent_runs)  # before the local Ray is sized for the workers
        local_ray.start_early(local_num_cpus(cfg))
    try:
        return _checks_and_data(cfg, concurrent_runs)
    except BaseException:
        if local_head:
            local_ray.cancel_early()  # a refused run leaves no Ray process behind
        raise


def _checks_and_data(cfg: RTuneConfig, concurrent_runs: int):
    from rtune.data.pipeline import prepare_data
    from rtune.fit import check_fit
    from rtune.model import check_lora_targets, load_model_config, max_context

    if cfg.strategy.name == "deepspeed":
        _check_deepspeed_toolchain()
    model_config = load_model_config(cfg.model)  # fails fast (one line) when the hub is unreachable
    if cfg.peft.method == "lora":
        check_lora_targets(cfg.model, cfg.peft, model_config)
    context = max_context(model_config)
    if context is not None and cfg.data.seq_len > context:
        raise UserError(f"data.seq_len={cfg.data.seq_len} is longer than the model's context of {context} "
                        f"tokens: set data.seq_len={context} or less")
    if cfg.model.name_or_path is None:  # its vocabulary is the BPE trained on the data: at most this big
        model_config.vocab_size = cfg.model.tokenizer_vocab_size
    check_fit(cfg, model_config, local_cluster=not (cfg.ray_address or os.environ.get("RAY_ADDRESS")))
    run_dir = _check_storage(cfg)
    resume_from = _resume_point(cfg, run_dir)
    started_ray = False
    if cfg.data.engine == "ray":  # the cluster prepares the data, so it comes up first
        started_ray = _init_ray(cfg, _driver_progress(cfg, run_dir))
    prepared, _ = prepare_data(cfg)
    per_worker = prepared.train_blocks // max_workers(cfg)
    t = cfg.trainer
    if t.global_batch_size is not None and t.global_batch_size > prepared.train_blocks:
        raise UserError(f"trainer.global_batch_size={t.global_batch_size} is more than the {prepared.train_blocks} "
                        f"training rows of {cfg.data.seq_len} tokens: use a smaller global batch or more data")
    if per_worker < cfg.trainer.micro_batch_size:
        raise UserError(f"the training split has {prepared.train_blocks} rows of {cfg.data.seq_len} tokens, "
                        f"{per_worker} per worker, fewer than trainer.micro_batch_size="
                        f"{cfg.trainer.micro_batch_size}: use more data, a smaller data.seq_len, micro batch or "
                        "num_workers")
    return prepared, run_dir, resume_from, started_ray


def _scaling_workers(cfg: RTuneConfig):
    """Ray's num_workers: an int, or (min, max) for an elastic group."""
    lo, hi = worker_range(cfg)
    return lo if lo == hi else (lo, hi)


def worker_env(use_gpu: bool) -> Dict[str, str]:
    """Environment for every Ray process rtune starts."""
    env = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "TOKENIZERS_PARALLELISM": "false"}
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"  # deepspeed (imported by transformers) stops probing for GPUs
    return env


def init_local_ray(num_cpus: int, use_gpu: bool = False, log_to_driver: bool = True) -> bool:
    """Join rtune's local Ray on 127.0.0.1 (rtune/driver/local_ray.py): the cluster `rtune up` keeps (returns
    True), else this process's own head, started early by the preflight or now."""
    from rtune.driver import local_ray

    # Ray Train's preemption watcher is an actor polling every 5 s for drain notices of cloud nodes about to
    # go away; one machine has none to give, and on 2 cores every idle actor's CPU comes out of training.
    # Train reads the switch from the environment of the process that calls fit() (the driver, or a Tune trial).
    # The head runs with --disable-usage-stats, but Ray Data asks the process that runs a pipeline (the driver):
    # left on, each local cluster starts a usage-collection actor (a Python process, ~1.5 s of CPU) to buffer
    # stats nobody sends. Nothing leaves this machine either way.
    quiet = {name: os.environ.setdefault(name, "0")
             for name in ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_USAGE_STATS_ENABLED")}
    return local_ray.connect(num_cpus, {"env_vars": {**worker_env(use_gpu), **quiet}}, log_to_driver=log_to_driver)


def local_num_cpus(cfg: RTuneConfig) -> int:
    """CPUs a local cluster offers: the machine's, or more when the workers reserve more (Ray queues them)."""
    per_worker = cfg.cpus_per_worker if isinstance(cfg.cpus_per_worker, int) else 1
    return max(os.cpu_count() or 1, max_workers(cfg) * per_worker)


_STARTED_LOCAL_RAY = False  # this process is connected to a local cluster on 127.0.0.1 (its own or `rtune up`'s)


def _init_ray(cfg: RTuneConfig, driver_progress: bool) -> bool:
    """Join the cluster named by ray_address / RAY_ADDRESS, or start a local one on 127.0.0.1.

    With driver_progress, worker logs stay in Ray's session logs (/tmp/ray/session_latest/logs) and the
    driver shows rtune's own progress instead. Returns True when this call started Ray.
    """
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        from rtune.driver.local_ray import prepare_join

        prepare_join(address)
        ray.init(address=address, runtime_env={"env_vars": worker_env(cfg.use_gpu)}, logging_level="warning")
    else:
        global _STARTED_LOCAL_RAY
        kept = init_local_ray(local_num_cpus(cfg), cfg.use_gpu, log_to_driver=not driver_progress)
        _STARTED_LOCAL_RAY = True
        return not kept  # a cluster `rtune up` keeps is left running
    return True


def ray_initialized() -> bool:
    import ray

    return ray.is_initialized()


def check_cluster_storage(storage_path: str) -> None:
    """A local storage_path on a multi-node cluster only works if every node mounts it at the same path."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and not is_uri(storage_path):
        print(f"[rtune] warning: storage_path={storage_path} is a local path and this Ray cluster has {len(nodes)} "
              "nodes: checkpoints from other nodes land there only if every node mounts it at the same path "
              "(NFS); otherwise set storage_path=s3://... or gs://...", flush=True)


def _summarize(cfg: RTuneConfig, result, run_dir: Optional[str], wall_s: float, packing: float) -> Dict[str, Any]:
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
        "num_workers": cfg.num_workers,
        "packing_non_pad_fraction": round(packing, 5),
        "wall_s": round(wall_s, 1),
    }
    if run_dir:
        metrics_path = os.path.join(run_dir, METRICS_FILE)
        if os.path.exists(metrics_path):
            evals = [r["eval_loss"] for r in read_metrics(metrics_path) if r.get("step") == 0 and "eval_loss" in r]
            summary["initial_eval_loss"] = evals[0] if evals else None
            summary["loss_curve"] = plot_losses(metrics_path, os.path.join(run_dir, LOSS_PNG),
                                                f"rtune {cfg.run_name}")
        with open(os.path.join(run_dir, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def ckpt_step(checkpoint: Optional[str]) -> Optional[int]:
    from rtune import checkpoint as ckpt

    return ckpt.read_marker(checkpoint)["step"] if checkpoint else None


def where_things_go(cfg: RTuneConfig, run_dir: Optional[str]) -> str:
    """One line: where this run's metrics, checkpoints, plots and tracker runs are written."""
    root = run_dir or f"{cfg.storage_path.rstrip('/')}/{cfg.run_name}"
    parts = [f"metrics {root}/{METRICS_FILE}", f"checkpoints {root}/checkpoint_*", f"summary + plot {root}/"]
    if "tensorboard" in cfg.tracking.backends and run_dir:
        parts.append(f"TensorBoard: tensorboard --logdir {run_dir}/tensorboard")
    if "mlflow" in cfg.tracking.backends:
        from rtune.tracking import mlflow_uri, project_of, redact

        parts.append(f"MLflow: experiment {project_of(cfg)} at {redact(mlflow_uri(cfg))} (run id in the start line)")
    if "wandb" in cfg.tracking.backends:
        from rtune.tracking import project_of

        parts.append(f"W&B: project {project_of(cfg)}")
    return "writing " + " | ".join(parts)


def _finish_tracking(cfg: RTuneConfig, run_dir: Optional[str], summary: Dict[str, Any]) -> None:
    """Summary, loss curve and model card into the tracker runs (the best checkpoint too with log_model)."""
    if not run_dir or not set(cfg.tracking.backends) & {"mlflow", "wandb"}:
        return
    from rtune.checkpoint import read_marker
    from rtune.inference import model_card

    best = summary.get("best_checkpoint") or summary.get("latest_checkpoint")
    card = os.path.join(run_dir, "MODEL_CARD.md")
    if best and os.path.isdir(best):
        with open(card, "w") as f:
            f.write(model_card(to_dict(cfg), read_marker(best), "lora" if cfg.peft.method == "lora" else "full"))
    files = [os.path.join(run_dir, name) for name in (SUMMARY_FILE, LOSS_PNG, "MODEL_CARD.md")]
    tracking.finish(cfg, run_dir, summary, files, best if best and os.path.isdir(best) else None)


def describe_data(prepared) -> str:
    """One line: samples, tokens, how they were packed, and what was left out and why."""
    p = prepared
    unit = "pairs" if p.skipped_identical or "preference" in p.packing else "samples"
    line = (f"{p.train_documents} train / {p.val_documents} val {unit}, {p.train_tokens:,} / {p.val_tokens:,} tokens "
            f"({p.train_target_tokens:,} / {p.val_target_tokens:,} carry the loss), {p.packing} packing into "
            f"{p.train_blocks} rows of {p.seq_len}, {100 * p.train_fill:.2f}% non-padding")
    left_out = [f"{n} {what}" for n, what in ((p.skipped_no_reply, "without an assistant reply skipped"),
                                              (p.skipped_identical, "pairs with identical replies skipped"),
                                              (p.dropped_too_long, f"longer than {p.seq_len} tokens dropped"),
                                              (p.truncated, f"truncated to {p.seq_len} tokens")) if n]
    return line + (f"; {', '.join(left_out)}" if left_out else "")


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

    from rtune.driver.resources import resolve_cpus_per_worker
    from rtune.worker.loop import train_loop_per_worker

    start = time.perf_counter()
    prepared, run_dir, resume_from, started_ray = preflight(cfg)
    packing = prepared.train_fill
    print(f"[rtune] run {cfg.run_name}: {describe_data(prepared)}", flush=True)
    print(f"[rtune] {where_things_go(cfg, run_dir)}", flush=True)
    # On a local cluster the driver reads rank 0's metrics from disk; elsewhere rank 0 prints them.
    driver_progress = _driver_progress(cfg, run_dir)
    started_ray = _init_ray(cfg, driver_progress) or started_ray  # a local Ray was sized by the preflight
    resolve_cpus_per_worker(cfg)  # a joined cluster: what its nodes offer
    check_cluster_storage(cfg.storage_path)
    resume_step = ckpt_step(resume_from)
    progress = (DriverProgress(run_dir, cfg.trainer.max_steps, resume_step=resume_step)
                if driver_progress and _STARTED_LOCAL_RAY else None)
    try:
        resources = {"CPU": cfg.cpus_per_worker}
        if cfg.use_gpu:
            resources["GPU"] = 1
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": to_dict(cfg), "data": prepared.to_dict(), "echo_progress": progress is None},
            scaling_config=ScalingConfig(num_workers=_scaling_workers(cfg), use_gpu=cfg.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(
                name=cfg.run_name,  # the same name + storage resumes (Ray Train V2)
                storage_path=cfg.storage_path,
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.trainer.keep_checkpoints,
                                                   checkpoint_score_attribute="eval_loss",
                                                   checkpoint_score_order="min"),
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
            raise TrainingFailed(cfg, err) from err
        summary = _summarize(cfg, result, run_dir, time.perf_counter() - start, packing)
        _finish_tracking(cfg, run_dir, summary)
        return summary
    finally:
        if progress is not None:
            progress.stop()
        if started_ray and not keep_ray:
            from rtune.driver import local_ray

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
            if key.endswith("loss") or key.startswith("eval_"):
                value = f"{value:.4f}"
            elif key.endswith(("mfu", "fraction")):
                value = f"{100 * value:.2f}%"
            else:
                value = f"{value:,.1f}"
        lines.append(f"{key:27s} {value}")
    return "\n".join(lines)

