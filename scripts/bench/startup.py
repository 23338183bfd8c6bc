"""Time to first step of the default 2-worker run, before/after start-up changes.

    python scripts/bench/startup.py --label after --baseline-repo /path/to/old/checkout --runs 2
    python scripts/bench/startup.py --multirun --label after --baseline-repo /path/to/old/checkout --runs 1
    python scripts/bench/startup.py --kept --label after --runs 3

With --kept, `python -m rtune up` starts a local cluster first and every measured run joins it (what
repeated runs on one machine get); `python -m rtune down` stops it at the end.

Launches `python -m rtune train trainer.max_steps=3` (the default model, data and 2 workers) and
measures from launching the process to the end of optimizer step 1 (the `time` of step 1 in
metrics.jsonl), and to exit. With --multirun: a 2-job Hydra sweep (`-m optim.lr=1e-3,3e-3`), timed
to exit, with each job's step 1 measured from the previous job's last step. Appends the medians under
--label to results/benchmarks/startup.json (multirun entries are prefixed `multirun: `).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import destination, machine, write_json  # noqa: E402


def sweep_run(repo: str = ROOT) -> dict:
    storage = tempfile.mkdtemp(prefix="rtune-startup-sweep-")
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "rtune", "train", "-m", f"storage_path={storage}", "trainer.max_steps=3",
                    "trainer.log_every_steps=1", "optim.lr=1e-3,3e-3"], check=True, cwd=repo,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - t0
    runs = sorted(d for d in os.listdir(storage) if not d.startswith("."))
    steps = [[r for r in map(json.loads, open(os.path.join(storage, d, "metrics.jsonl"))) if "loss" in r] for d in runs]
    job2_ttfs = steps[1][0]["time"] - steps[0][-1]["time"]
    return {"time_to_first_step_s": round(job2_ttfs, 2), "wall_s": round(wall, 2)}


def one_run(repo: str = ROOT) -> dict:
    storage = tempfile.mkdtemp(prefix="rtune-startup-")
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "rtune", "train", f"storage_path={storage}", "run_name=s",
                    "trainer.max_steps=3", "trainer.log_every_steps=1"], check=True, cwd=repo,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - t0
    with open(os.path.join(storage, "s", "metrics.jsonl")) as f:
        first = next(r for r in map(json.loads, f) if r.get("step") == 1)
    return {"time_to_first_step_s": round(first["time"] - t0, 2), "wall_s": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--baseline-repo", help="a checkout of the code before the change: runs alternate "
                        "between it and this one (Ray's start-up varies by ~10 s run to run)")
    parser.add_argument("--baseline-label", default="before")
    parser.add_argument("--multirun", action="store_true", help="time a 2-job sweep instead of one run")
    parser.add_argument("--kept", action="store_true", help="runs join a cluster `python -m rtune up` keeps")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "benchmarks", "startup.json"))
    args = parser.parse_args()
    measure = sweep_run if args.multirun else one_run
    prefix = ("multirun: " if args.multirun else "") + ("kept cluster: " if args.kept else "")
    if args.kept:
        subprocess.run([sys.executable, "-m", "rtune", "up"], check=True, cwd=ROOT)
    one_run()  # warm the data cache and the OS page cache; not counted
    repos = {prefix + args.label: ROOT}
    if args.baseline_repo:
        repos = {prefix + args.baseline_label: os.path.abspath(args.baseline_repo), **repos}
    runs = {label: [] for label in repos}
    try:
        for _ in range(args.runs):
            for label, repo in repos.items():  # interleaved, so drift hits both alike
                runs[label].append(measure(repo))
    finally:
        if args.kept:
            subprocess.run([sys.executable, "-m", "rtune", "down"], check=True, cwd=ROOT)
    out = destination(args.out, smoke=False)
    report = json.load(open(out)) if os.path.exists(out) else {
        "what": "time to first step of `python -m rtune train trainer.max_steps=3` (default: tiny GPT-2, 2 CPU "
                "workers) from process launch; median of interleaved runs after one warm-up run",
        "machine": machine()}
    for label, label_runs in runs.items():
        entry = {"runs": label_runs,
                 "median_time_to_first_step_s": statistics.median(r["time_to_first_step_s"] for r in label_runs),
                 "median_wall_s": statistics.median(r["wall_s"] for r in label_runs),
                 "date": time.strftime("%Y-%m-%d %H:%M")}
        report[label] = entry
        print(label, json.dumps(entry))
    write_json(report, out, smoke=False)


if __name__ == "__main__":
    main()
