"""Everything a user can get wrong, checked on the driver before a Ray worker starts: the config, the model
(hub reachable, context long enough, memory), the data (path, fields, non-empty, enough rows), storage, the
checkpoint to resume from. Then the data is prepared (a cache hit when nothing changed).

`finalize` resolves what workers must not decide: absolute paths (Ray workers run in their own working
directory), the run name, the learning rate.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from typing import Optional

from rtune import checkpoint as ckpt
from rtune.config import RTuneConfig, is_uri, max_workers, to_dict, validate
from rtune.data.pipeline import prepare_data
from rtune.driver import local_ray
from rtune.driver.cluster import connect, local_num_cpus, ray_initialized
from rtune.driver.resources import resolve_cpus_per_worker
from rtune.rewards import Rewards
from rtune.errors import UserError
from rtune.fit import check_fit
from rtune.model import check_lora_targets, load_model_config, max_context, require_bitsandbytes
from rtune.tracking import check_backends


def default_run_name(cfg: RTuneConfig) -> str:
    """A fresh name per invocation, so a plain re-run never resumes by accident."""
    model = (cfg.model.name_or_path or cfg.model.from_config.get("model_type", "model")).rstrip("/")
    model = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(model))
    return f"{model}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def finalize(cfg: RTuneConfig) -> RTuneConfig:
    """Resolve on the driver what workers must not decide: absolute paths, the run name, the learning rate.

    Ray workers run in their own working directory, so every local path becomes absolute here.
    """
    if cfg.run_name is None:
        cfg.run_name = default_run_name(cfg)
    if cfg.optim.lr is None:
        cfg.optim.lr = cfg.model.suggested_lora_lr if cfg.peft.adapters else cfg.model.suggested_lr
    if not is_uri(cfg.storage_path):
        cfg.storage_path = os.path.abspath(os.path.expanduser(cfg.storage_path))
    cfg.data.cache_dir = os.path.abspath(os.path.expanduser(os.environ.get("RTUNE_CACHE_DIR", cfg.data.cache_dir)))
    if cfg.data.engine == "ray":  # shared by every node: under the run storage unless named
        uri = cfg.data.cache_uri or f"{cfg.storage_path.rstrip('/')}/data_cache"
        cfg.data.cache_uri = uri if is_uri(uri) else os.path.abspath(os.path.expanduser(uri))
    for owner, key in ((cfg.data, "path"), (cfg.model, "name_or_path"), (cfg.model, "tokenizer")):
        value = getattr(owner, key)
        if value and not value.startswith("package:") and not is_uri(value):
            parts = [os.path.expanduser(p.strip()) for p in value.split(",")]
            if all(os.path.exists(p) for p in parts):
                setattr(owner, key, ",".join(os.path.abspath(p) for p in parts))
    return cfg


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


def resume_point(cfg: RTuneConfig, run_dir: Optional[str]) -> Optional[str]:
    """The checkpoint this run will resume from, checked before any worker starts (None: fresh)."""
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


def driver_progress(cfg: RTuneConfig, run_dir: Optional[str]) -> bool:
    """Whether the driver shows rank 0's progress (read from disk) instead of streaming worker logs."""
    local_cluster = not (cfg.ray_address or os.environ.get("RAY_ADDRESS"))
    return run_dir is not None and local_cluster and os.environ.get("RTUNE_WORKER_LOGS") != "1"


def preflight(cfg: RTuneConfig, concurrent_runs: int = 1):
    """All driver-side checks and data preparation; returns (PreparedData, run_dir, the checkpoint to resume
    from, whether this call started Ray). data.engine=ray starts or joins the cluster here, to prepare the data.
    concurrent_runs: Tune trials that will share the cores."""
    validate(cfg)
    finalize(cfg)
    check_backends(cfg)
    if cfg.objective.name == "grpo":
        Rewards(cfg.rewards, cfg.reward_weights)  # a reward function that cannot be imported: one line, now
    local_head = not (ray_initialized() or cfg.ray_address or os.environ.get("RAY_ADDRESS"))
    if local_head:  # the local Ray comes up in its own process while the checks and the data below run
        resolve_cpus_per_worker(cfg, concurrent_runs)  # before the local Ray is sized for the workers
        local_ray.start_early(local_num_cpus(cfg))
    try:
        return _checks_and_data(cfg, concurrent_runs)
    except BaseException:
        if local_head:
            local_ray.cancel_early()  # a refused run leaves no Ray process behind
        raise


def model_config_checked(cfg: RTuneConfig):
    """The model's config (no weights), checked against the run's LoRA targets and seq_len: what the fit check
    estimates from."""
    model_config = load_model_config(cfg.model)  # fails fast (one line) when the hub is unreachable
    if cfg.peft.quantized:
        require_bitsandbytes()
    if cfg.peft.adapters:
        check_lora_targets(cfg.model, cfg.peft, model_config)
    context = max_context(model_config)
    if context is not None and cfg.data.seq_len > context:
        raise UserError(f"data.seq_len={cfg.data.seq_len} is longer than the model's context of {context} "
                        f"tokens: set data.seq_len={context} or less")
    if cfg.model.name_or_path is None:  # its vocabulary is the BPE trained on the data: at most this big
        model_config.vocab_size = cfg.model.tokenizer_vocab_size
    return model_config


def _checks_and_data(cfg: RTuneConfig, concurrent_runs: int):
    if cfg.strategy.name == "deepspeed":
        _check_deepspeed_toolchain()
    check_fit(cfg, model_config_checked(cfg), local_cluster=not (cfg.ray_address or os.environ.get("RAY_ADDRESS")))
    run_dir = _check_storage(cfg)
    resume_from = resume_point(cfg, run_dir)
    started_ray = False
    if cfg.data.engine == "ray":  # the cluster prepares the data, so it comes up first
        started_ray = connect(cfg, driver_progress(cfg, run_dir))
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
