"""Where the cores go while `python -m rtune train num_workers=1` trains at its defaults on a local cluster.

    python scripts/bench/cpu_share.py                       # rtune as it is
    python scripts/bench/cpu_share.py RAY_event_stats=0 ... # the same with Ray settings in the environment

Trains the bench model of scripts/bench/throughput.py (GPT-2 architecture 4 x 256, micro batch 8 x 256
tokens), waits for step 10, then reads every process's CPU time from /proc over a 40 s window: the training
worker (the busiest process) and everything else on the machine (Ray's GCS, raylet, dashboard, log monitor,
the Train controller and its helper actors, the driver). Prints one JSON line: cores each used, steps per second, the
machine (results/benchmarks/ray_cpu_share.json gathers such lines; this script writes no file).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import machine  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> dict:
    """pid -> (user + system ticks, command line)."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ").strip()[:60]
        except OSError:  # the process ended between the listing and the read
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(pid)] = (int(fields[11]) + int(fields[12]), cmd)
    return out


def lines(path: str) -> int:
    with open(path) as f:
        return sum(1 for _ in f)


def measure(env_extra: dict, window_s: float = 40) -> dict:
    storage = tempfile.mkdtemp(prefix="rtune-cpu-")
    cmd = [sys.executable, "-m", "rtune", "train", "model.from_config.n_layer=4", "model.from_config.n_embd=256",
           "model.from_config.n_head=4", "data.seq_len=256", "num_workers=1", f"storage_path={storage}", "run_name=c",
           "trainer.max_steps=400", "trainer.micro_batch_size=8", "trainer.log_every_steps=1",
           "trainer.eval_every_steps=1000", "trainer.checkpoint_every_steps=1000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env_extra}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = os.path.join(storage, "c", "metrics.jsonl")
    try:
        while not (os.path.exists(metrics) and lines(metrics) > 10):
            time.sleep(1)
        time.sleep(5)
        before, t0, steps0 = cpu_ticks(), time.time(), lines(metrics)
        time.sleep(window_s)
        after, t1, steps1 = cpu_ticks(), time.time(), lines(metrics)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # rtune stops its workers and its local Ray
        proc.wait(120)
    cores = {pid: ((ticks - before.get(pid, (0,))[0]) / HZ / (t1 - t0), cmd) for pid, (ticks, cmd) in after.items()}
    busy = sorted((c for c in cores.values() if c[0] > 0.001), reverse=True)
    worker, others = busy[0], busy[1:]
    return {"env": env_extra, "worker_cores": round(worker[0], 3),
            "others_cores": round(sum(c for c, _ in others), 3), "steps_per_s": round((steps1 - steps0) / (t1 - t0), 3),
            "busiest_others": [[round(c, 3), cmd] for c, cmd in others[:8]], "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env", nargs="*", metavar="KEY=VALUE", help="set in the environment of the run")
    args = parser.parse_args()
    print(json.dumps(measure(dict(arg.split("=", 1) for arg in args.env))), flush=True)


if __name__ == "__main__":
    main()
