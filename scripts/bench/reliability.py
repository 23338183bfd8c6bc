"""Fault drills against the real command line; writes results/benchmarks/reliability.json.

    python scripts/bench/reliability.py            # ~8 min on a 2-core CPU
    python scripts/bench/reliability.py --quick    # one fault of each kind, fewer bad inputs (under results/smoke/)

Faults, each on a fresh 2-worker tiny run (30 steps, checkpoint every 5) through `python -m rtune train`:
- worker kill: SIGKILL one RayTrainWorker by PID at a random step (max_failures=2; Ray restarts the
  workers and rtune resumes from the newest complete checkpoint on storage);
- driver kill: SIGKILL the `rtune train` process at a random step, then re-run the same run_name;
- fail_at_step: `debug.fail_at_step=K` kills rank 1 after step K (max_failures=1).
For each: the step the fault hit, the step training resumed from (parsed from rtune's own
"resuming ... step N" line), steps lost, and whether the run reached max_steps.
Bad inputs: every user error from the README's table, counting exit codes and tracebacks shown.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import GPT2_TINY, machine, write_json  # noqa: E402

OUT = os.path.join(ROOT, "results", "benchmarks", "reliability.json")
MAX_STEPS, CKPT_EVERY = 30, 5
RESUME_LINE = re.compile(r"resuming (?:run \S+ )?from \S+ (?:at step |\(step )(\d+)")


def overrides(storage: str, run_name: str, *extra: str) -> list[str]:
    return [f"storage_path={storage}", f"run_name={run_name}", "num_workers=2", f"trainer.max_steps={MAX_STEPS}",
            f"trainer.checkpoint_every_steps={CKPT_EVERY}", f"trainer.eval_every_steps={CKPT_EVERY}",
            "trainer.eval_max_batches=1", "trainer.log_every_steps=1", *GPT2_TINY, "data.seq_len=64",
            "trainer.micro_batch_size=4", "optim.warmup_steps=2", *extra]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rtune", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def last_step(run_dir: str) -> int:
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            steps = [json.loads(line).get("step", 0) for line in f if line.strip()]
        return max(steps, default=0)
    except (OSError, ValueError):
        return 0


def wait_step(run_dir: str, step: int, proc: subprocess.Popen, timeout_s: float = 300) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        now = last_step(run_dir)
        if now >= step:
            return now
        time.sleep(0.05)
    raise RuntimeError(f"run did not reach step {step}")


def train_workers() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any("RayTrainWorker" in c for c in p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            pass
    return out


def finish(proc: subprocess.Popen, run_dir: str, kind: str, hit_step: int, started: float, log: str = "") -> dict:
    log += proc.communicate(timeout=900)[0]
    resumed = [int(m.group(1)) for m in RESUME_LINE.finditer(log)]
    resumed_from = resumed[-1] if resumed else 0
    summary_path = os.path.join(run_dir, "summary.json")
    final = json.load(open(summary_path))["final_step"] if os.path.exists(summary_path) else None
    return {"fault": kind, "hit_at_step": hit_step, "resumed_from_step": resumed_from,
            "steps_lost": hit_step - resumed_from, "recovered": final == MAX_STEPS and proc.returncode == 0,
            "final_step": final, "tracebacks_shown": log.count("Traceback"), "wall_s": round(time.time() - started, 1)}


def worker_kill(storage: str, name: str, rng: random.Random) -> dict:
    started = time.time()
    target = rng.randint(CKPT_EVERY + 1, MAX_STEPS - CKPT_EVERY)
    run_dir = os.path.join(storage, name)
    proc = start(overrides(storage, name, "trainer.max_failures=2"))
    hit = wait_step(run_dir, target, proc)
    rng.choice(train_workers()).send_signal(signal.SIGKILL)
    return finish(proc, run_dir, "worker SIGKILL by pid", hit, started)


def driver_kill(storage: str, name: str, rng: random.Random) -> dict:
    started = time.time()
    target = rng.randint(CKPT_EVERY + 1, MAX_STEPS - CKPT_EVERY)
    run_dir = os.path.join(storage, name)
    proc = start(overrides(storage, name))
    wait_step(run_dir, target, proc)
    proc.send_signal(signal.SIGKILL)
    first_log = proc.communicate()[0]
    deadline = time.monotonic() + 60
    while train_workers() and time.monotonic() < deadline:
        time.sleep(0.5)
    # Ray reaps the dead driver's workers within seconds; the work they did until then counts too.
    hit = last_step(run_dir)
    return finish(start(overrides(storage, name)), run_dir, "driver SIGKILL + re-run", hit, started, first_log)


def fail_at_step(storage: str, name: str, step: int) -> dict:
    started = time.time()
    run_dir = os.path.join(storage, name)
    proc = start(overrides(storage, name, f"debug.fail_at_step={step}", "debug.fail_rank=1",
                           "trainer.max_failures=1"))
    return finish(proc, run_dir, f"debug.fail_at_step={step}", step, started)


def bad_inputs(storage: str, quick: bool) -> list[dict]:
    tmp = tempfile.mkdtemp(prefix="rtune-bad-")
    with open(os.path.join(tmp, "nofield.jsonl"), "w") as f:
        f.write('{"body": "fn a() {}"}\n{"body": "fn b() {}"}\n')
    with open(os.path.join(tmp, "empty.jsonl"), "w") as f:
        f.write('{"content": ""}\n{"content": "  "}\n')
    with open(os.path.join(tmp, "latin1.jsonl"), "wb") as f:
        f.write(b'{"content": "fn a() {}"}\n{"content": "caf\xe9"}\n')
    blocker = os.path.join(tmp, "file")
    open(blocker, "w").close()
    cases = [
        ["trainer.max_stesp=5"], ["trainer.max_steps=many"], ["num_workers=0"], ["model=llama9"], ["data=nope"],
        ["data.seq_len=4096"], ["data.path=/no/such/file.jsonl"], [f"data.path={tmp}/nofield.jsonl"],
        [f"data.path={tmp}/empty.jsonl"], [f"data.path={tmp}/latin1.jsonl"], [f"storage_path={blocker}/x"],
        ["model=gpt2"], ["data=the_stack_smol"], ["trainer.precision=fp8"], ["model.name_or_path"],
    ]
    if quick:
        cases = cases[:5]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    results = []
    for case in cases:
        args = case if any(a.startswith("storage_path=") for a in case) else [f"storage_path={storage}", *case]
        proc = subprocess.run([sys.executable, "-m", "rtune", "train", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=300)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("rtune: error:")]
        results.append({"input": " ".join(case), "exit_code": proc.returncode,
                        "message": lines[0] if lines else proc.stderr.strip()[-200:],
                        "one_line": len(lines) == 1, "traceback_shown": "Traceback" in proc.stderr + proc.stdout})
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    storage = tempfile.mkdtemp(prefix="rtune-drill-")
    n_kills = 1 if args.quick else 3
    faults = [worker_kill(storage, f"wk{i}", rng) for i in range(n_kills)]
    faults.append(driver_kill(storage, "dk0", rng))
    faults.append(fail_at_step(storage, "fas0", 12))
    for fault in faults:
        print(json.dumps(fault), flush=True)
    bad = bad_inputs(storage, args.quick)
    report = {
        "what": "fault drills on `python -m rtune train` (2 workers, tiny GPT-2, bundled Rust data)",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "max_steps": MAX_STEPS, "checkpoint_every_steps": CKPT_EVERY,
        "faults": faults,
        "faults_injected": len(faults), "runs_recovered": sum(f["recovered"] for f in faults),
        "max_steps_lost": max(f["steps_lost"] for f in faults),
        "bad_inputs": bad, "bad_inputs_tried": len(bad),
        "bad_inputs_one_line_nonzero": sum(b["one_line"] and b["exit_code"] != 0 for b in bad),
        "tracebacks_shown": sum(f["tracebacks_shown"] for f in faults) + sum(b["traceback_shown"] for b in bad),
    }
    out = write_json(report, args.out, smoke=args.quick)
    shutil.rmtree(storage, ignore_errors=True)
    print(f"{report['runs_recovered']}/{report['faults_injected']} faults recovered, at most "
          f"{report['max_steps_lost']} steps lost (checkpoint every {CKPT_EVERY}); "
          f"{report['bad_inputs_one_line_nonzero']}/{report['bad_inputs_tried']} bad inputs gave one line; "
          f"{report['tracebacks_shown']} tracebacks shown -> {out}")


if __name__ == "__main__":
    main()
