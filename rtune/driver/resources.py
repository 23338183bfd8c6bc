"""What each Ray Train worker reserves: `cpus_per_worker=auto` resolved against the cluster it runs on."""

from __future__ import annotations

import os

from rtune.config import RTuneConfig, max_workers


def resolve_cpus_per_worker(cfg: RTuneConfig, concurrent_runs: int = 1) -> None:
    """cpus_per_worker=auto: the cores on offer divided among the workers, at least 1 (an integer stays).

    On a local cluster that rtune starts, the cores are this machine's; once joined to a running cluster,
    what its alive nodes offer, capped at the largest node (a worker runs on one node). concurrent_runs:
    Tune trials running at once share the cores. Ray sets each worker's torch threads to its reservation,
    so a single worker on a 2-core box trains with 2 threads, as a plain script would.
    """
    if cfg.cpus_per_worker != "auto":
        return
    import ray

    slots = max_workers(cfg) * concurrent_runs  # an elastic group is sized for its largest size
    if ray.is_initialized():
        nodes = [n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
        per_worker = min(max(nodes, default=1.0), sum(nodes) // slots)
        offered = f"{sum(nodes):g} CPUs on {len(nodes)} node(s)"
    else:
        cores = os.cpu_count() or 1
        per_worker, offered = cores // slots, f"{cores} cores on this machine"
    cfg.cpus_per_worker = max(1, int(per_worker))
    print(f"[rtune] cpus_per_worker=auto: {cfg.cpus_per_worker} per worker ({offered}, {slots} worker(s)"
          f"{f' in {concurrent_runs} concurrent trials' if concurrent_runs > 1 else ''})", flush=True)
