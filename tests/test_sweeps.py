"""Sweeps through the real command line: Hydra multirun (summary, failed jobs, re-run skips/resumes)
and a Ray Tune search with ASHA early stopping.

The commands join the session's local Ray (127.0.0.1) through RAY_ADDRESS rather than start their own:
with two Ray instances on one machine, Ray 2.60's Train placement-group cleaner cannot tell which
cluster to ask ("Found multiple active Ray instances") and a trial stopped by ASHA keeps its CPUs.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtune.metrics import read_metrics

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TINY = ["num_workers=1", "trainer.eval_every_steps=3", "trainer.checkpoint_every_steps=3", "trainer.log_every_steps=3",
        "model.from_config.n_layer=2", "model.from_config.n_embd=64", "model.from_config.n_head=2",
        "data.seq_len=64", "trainer.micro_batch_size=4", "optim.warmup_steps=2"]


@pytest.fixture
def ray_address(ray_cluster):
    import ray

    return ray.get_runtime_context().gcs_address


def _rtune(address: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtune", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RAY_ADDRESS": address})


def _rows(sweep_dir: Path) -> dict:
    with open(sweep_dir / "sweep_summary.csv") as f:
        return {r["run_name"]: r for r in csv.DictReader(f)}


def test_multirun_sweep_summary_failures_and_rerun(tmp_path, ray_address):
    # 2 jobs: the debug.fail_at_step=3 one loses a worker after step 3 (max_failures=0), so it fails.
    sweep = ["train", "-m", f"storage_path={tmp_path}", "debug.fail_at_step=3,null",
             "trainer.max_failures=0", "trainer.max_steps=6", "tracking.backends=[mlflow]", *TINY]
    first = _rtune(ray_address, *sweep)
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    (sweep_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("sweep-")]
    rows = _rows(sweep_dir)
    print((sweep_dir / "sweep_summary.md").read_text())  # shown when an assertion below fails
    assert sorted(rows) == ["debug.fail_at_step=3", "debug.fail_at_step=null"]
    for name, r in rows.items():
        assert (sweep_dir / name).is_dir()
        if name.endswith("=3"):  # recorded as failed, with its error, after its first checkpoint
            assert r["status"] == "failed" and "training failed" in r["error"] and r["final_step"] == "3"
            assert (sweep_dir / name / "failed.json").exists()
        else:  # ran after the failed job: a failure does not stop the sweep
            assert r["status"] == "finished" and r["final_step"] == "6" and float(r["eval_loss"]) < 7.7
            assert os.path.isdir(r["best_checkpoint"]) and float(r["tokens_per_s"]) > 0 and float(r["wall_s"]) > 0
    assert (sweep_dir / "sweep_summary.md").read_text().count("| finished |") == 1
    assert (sweep_dir / "sweep_eval_loss.png").stat().st_size > 5000

    second = _rtune(ray_address, *sweep)  # the same sweep again: skip the finished job, resume the failed one
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("already finished") == 1
    assert second.stdout.count("(step 3)") == 1  # "resuming run <name> from .../checkpoint_00000003 (step 3)"
    rows = _rows(sweep_dir)
    assert {r["status"] for r in rows.values()} == {"finished"} and len(rows) == 2
    assert not any((sweep_dir / name / "failed.json").exists() for name in rows)
    # MLflow: the sweep is one experiment with a parent run and the 2 jobs as its children, each one run
    # (a resumed job continued its MLflow run), every step once.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(sweep_dir.name).experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_name == sweep_dir.name and sorted(r.info.run_name for r in children) == sorted(rows)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"sweep_summary.md", "sweep_eval_loss.png"}
    for child in children:
        logged = [r["step"] for r in read_metrics(sweep_dir / child.info.run_name / "metrics.jsonl") if "loss" in r]
        assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "loss")) == logged == [3, 6]

    third = _rtune(ray_address, *sweep)  # nothing left to do: no training, no Ray
    assert third.returncode == 0 and third.stdout.count("already finished") == 2
    assert "starting fresh" not in third.stdout and "resuming" not in third.stdout


def test_tune_with_asha_stops_trials_early_and_summarizes_all(tmp_path, ray_address):
    # Best learning rate first: the later, worse trials meet a rung whose records they cannot beat.
    # A tiny step takes ~0.1 s: paced to 0.4 s, a stop decision (reported through Train's controller
    # to Tune, seconds later) reaches a trial while it still trains, as it would a real model's.
    space = 'search.space={optim.lr: "grid(3e-3,1e-3,1e-4,1e-5)"}'
    out = _rtune(ray_address, "tune", f"storage_path={tmp_path}", space, "search.num_samples=1",
                 "search.max_concurrent=2", "search.scheduler=asha", "search.grace_period_steps=3",
                 "trainer.max_steps=24", "debug.step_delay_s=0.4", *TINY)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (sweep_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("sweep-")]
    rows = _rows(sweep_dir)
    assert sorted(rows) == ["trial000-optim.lr=0.003", "trial001-optim.lr=0.001", "trial002-optim.lr=0.0001",
                            "trial003-optim.lr=1e-05"]
    assert rows["trial000-optim.lr=0.003"]["status"] == "finished"
    assert rows["trial000-optim.lr=0.003"]["final_step"] == "24"
    stopped = [r for r in rows.values() if r["status"] == "stopped early"]
    assert stopped, rows
    for r in stopped:
        assert int(r["final_step"]) < 24 and "stopped by asha" in r["error"]
    for name in rows:  # every trial is an ordinary run with the usual files
        assert (sweep_dir / name / "metrics.jsonl").exists() and (sweep_dir / name / "summary.json").exists()
    assert (sweep_dir / "sweep_eval_loss.png").exists()
    assert "best trial: trial000-optim.lr=0.003" in out.stdout


def test_tune_refuses_a_second_local_cluster_and_names_the_one_to_join(tmp_path, ray_address):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "rtune", "tune", f"storage_path={tmp_path}",
                          'search.space={optim.lr: "choice(1e-3,3e-3)"}', *TINY], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"join it with ray_address={ray_address}" in out.stderr and "Traceback" not in out.stderr
