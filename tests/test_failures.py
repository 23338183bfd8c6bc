"""Faults from outside, as they happen in production: a worker process SIGKILLed by PID, the driver
SIGKILLed, Ctrl-C. Each run continues from the newest complete checkpoint and loses nothing before it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from conftest import compose, tiny_overrides
from rtune.driver.launch import train
from rtune.metrics import read_metrics

pytestmark = pytest.mark.slow
SENTINEL = "hf_SENTINEL_do_not_log_4f2a9c"


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def train_workers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any("RayTrainWorker" in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def logged_steps(run_dir) -> list[int]:
    return [r["step"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if "loss" in r]


def test_worker_killed_by_pid_is_recovered(ray_cluster, tmp_path):
    cfg = compose(*tiny_overrides(tmp_path, "killed", "num_workers=2", "trainer.max_steps=40",
                                  "trainer.checkpoint_every_steps=5", "trainer.eval_every_steps=5",
                                  "trainer.eval_max_batches=1", "trainer.max_failures=2"))
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(summary=train(cfg)), daemon=True)
    runner.start()
    wait_for(lambda: os.path.exists(tmp_path / "killed/checkpoint_00000010/rtune_checkpoint.json"), 300,
             "checkpoint 10")
    victim = wait_for(train_workers, 30, "a RayTrainWorker process")[-1]
    victim.send_signal(signal.SIGKILL)
    runner.join(timeout=600)
    summary = outcome["summary"]
    assert summary["final_step"] == 40
    assert logged_steps(summary["run_dir"]) == list(range(1, 41))  # every step exactly once in the record


def test_worker_lost_mid_upload_never_resumes_from_the_half_uploaded_checkpoint(ray_cluster, tmp_path):
    """Async uploads, file by file, marker first, 0.3 s apart; rank 1 dies once step 8's marker has reached
    storage (the rest of step 8's files have not): the restarted group resumes from step 4, not from the
    half-uploaded step 8, and the finished run's step-8 checkpoint is whole."""
    from rtune import checkpoint as ckpt

    summary = train(compose(*tiny_overrides(
        tmp_path, "midupload", "num_workers=2", "trainer.max_steps=10", "trainer.checkpoint_every_steps=4",
        "trainer.eval_every_steps=4", "trainer.eval_max_batches=1", "trainer.max_failures=1",
        "trainer.checkpoint_upload=async", "debug.fail_at_step=8", "debug.fail_rank=1", "debug.upload_delay_s=0.3")))
    run_dir = summary["run_dir"]
    events = [json.loads(line) for line in open(os.path.join(run_dir, "events.jsonl"))]
    assert [e["step"] for e in events] == [0, 4]  # not 8: its marker was there, its files were not
    assert logged_steps(run_dir) == list(range(1, 11))
    assert summary["final_step"] == 10
    assert ckpt.read_marker(os.path.join(run_dir, ckpt.dir_name(8)))["step"] == 8  # re-uploaded whole


def run_cli(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "rtune", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def cli_overrides(tmp_path, run_name, *extra):
    return tiny_overrides(tmp_path, run_name, "num_workers=2", "trainer.max_steps=30",
                          "trainer.checkpoint_every_steps=5", "trainer.eval_every_steps=5",
                          "trainer.eval_max_batches=1", *extra)


def test_driver_sigkill_then_rerun_resumes_and_never_logs_secrets(tmp_path):
    from mlflow.tracking import MlflowClient

    from test_tracking import tensorboard_scalars

    env = {**os.environ, "HF_TOKEN": SENTINEL}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = cli_overrides(tmp_path, "drv", "tracking.backends=[tensorboard,mlflow]")  # MLflow: the local SQLite store
    driver = run_cli(args, env=env)
    wait_for(lambda: os.path.exists(tmp_path / "drv/checkpoint_00000005/rtune_checkpoint.json"), 300, "checkpoint 5")
    driver.send_signal(signal.SIGKILL)
    first_output = driver.communicate()[0]
    # Ray tears the job's actors down once their owner (the driver) is gone.
    wait_for(lambda: not train_workers(), 60, "the killed run's workers to exit")
    rerun = run_cli(args, env=env)
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output[-3000:]
    assert "resuming run drv from" in output
    # The display goes on from the resume step; it does not replay the killed run's lines.
    shown = [int(line.split("step ")[1].split("/")[0]) for line in output.splitlines() if "/30 |" in line]
    assert shown and min(shown) > 5 and shown[-1] == 30, shown
    summary = json.loads((tmp_path / "drv/summary.json").read_text())
    assert summary["final_step"] == 30
    assert logged_steps(tmp_path / "drv") == list(range(1, 31))
    # One tracker run across the kill: every step once in MLflow, and in what TensorBoard reads.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("rtune").experiment_id])
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(1, 31))
    assert [step for step, _ in tensorboard_scalars(tmp_path / "drv/tensorboard")["loss"]] == list(range(1, 31))
    # The secret is in the environment of every process, and in no output, file, checkpoint or tracker store.
    assert SENTINEL not in first_output + output
    for root, _, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert SENTINEL.encode() not in f.read(), os.path.join(root, name)


def test_ctrl_c_stops_workers_and_prints_the_resume_command(tmp_path):
    proc = run_cli(cli_overrides(tmp_path, "intr", "trainer.max_steps=400"))
    wait_for(lambda: os.path.exists(tmp_path / "intr/checkpoint_00000005/rtune_checkpoint.json"), 300, "checkpoint 5")
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    error_lines = [ln for ln in output.splitlines() if ln.startswith("rtune: error:")]
    assert len(error_lines) == 1 and "run_name=intr" in error_lines[0] and "Resume with" in error_lines[0]
    wait_for(lambda: not train_workers(), 60, "workers to stop")
    assert os.path.exists(tmp_path / "intr/checkpoint_00000005/model.safetensors")  # nothing lost
