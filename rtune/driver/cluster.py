"""The Ray cluster a run uses: the one `ray_address` / RAY_ADDRESS names, or rtune's local one on 127.0.0.1
(`local_ray.py`), joined with the environment every Ray process rtune starts needs."""

from __future__ import annotations

import os
from typing import Dict

from rtune.config import RTuneConfig, is_uri, max_workers
from rtune.driver import local_ray


def worker_env(use_gpu: bool) -> Dict[str, str]:
    """Environment for every Ray process rtune starts."""
    env = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "TOKENIZERS_PARALLELISM": "false"}
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"  # deepspeed (imported by transformers) stops probing for GPUs
    return env


def init_local_ray(num_cpus: int, use_gpu: bool = False, log_to_driver: bool = True) -> bool:
    """Join rtune's local Ray on 127.0.0.1 (rtune/driver/local_ray.py): the cluster `rtune up` keeps (returns
    True), else this process's own head, started early by the preflight or now."""
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


_on_local_cluster = False  # this process joined a local cluster on 127.0.0.1 (its own or `rtune up`'s)


def on_local_cluster() -> bool:
    """Whether `connect` joined a local cluster on 127.0.0.1 (the driver can read rank 0's files there)."""
    return _on_local_cluster


def connect(cfg: RTuneConfig, driver_progress: bool) -> bool:
    """Join the cluster named by ray_address / RAY_ADDRESS, or start a local one on 127.0.0.1.

    With driver_progress, worker logs stay in Ray's session logs (/tmp/ray/session_latest/logs) and the
    driver shows rtune's own progress instead. Returns True when this call started Ray.
    """
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        local_ray.prepare_join(address)
        ray.init(address=address, runtime_env={"env_vars": worker_env(cfg.use_gpu)}, logging_level="warning")
    else:
        global _on_local_cluster
        kept = init_local_ray(local_num_cpus(cfg), cfg.use_gpu, log_to_driver=not driver_progress)
        _on_local_cluster = True
        return not kept  # a cluster `rtune up` keeps is left running
    return True


def ray_initialized() -> bool:
    import ray  # here, not at the top: `rtune --help` and config errors need no Ray

    return ray.is_initialized()


def check_cluster_storage(storage_path: str) -> None:
    """A local storage_path on a multi-node cluster only works if every node mounts it at the same path."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and not is_uri(storage_path):
        print(f"[rtune] warning: storage_path={storage_path} is a local path and this Ray cluster has {len(nodes)} "
              "nodes: checkpoints from other nodes land there only if every node mounts it at the same path "
              "(NFS); otherwise set storage_path=s3://... or gs://...", flush=True)
