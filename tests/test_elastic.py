"""Runs that change their worker count: the global sample order, trainer.global_batch_size, elastic groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict

import pytest
import torch
from conftest import compose, tiny_overrides

from rtune.config import validate
from rtune.errors import UserError
from rtune.driver.launch import TrainingFailed, train
from rtune.metrics import read_metrics

# 8 documents pack into 278 rows of 64 tokens: with 48 rows per step an epoch is 5 steps (38 rows left over),
# so 12 steps cross two epoch boundaries. 2 workers accumulate 6 micro-batches of 4, 1 worker 12.
COMMON = ("data.max_documents=8", "trainer.global_batch_size=48", "trainer.micro_batch_size=4",
          "trainer.max_steps=12", "trainer.checkpoint_every_steps=4", "trainer.eval_every_steps=4",
          "trainer.eval_max_batches=1", "optim.lr=3e-3", "debug.record_rows=true")


def _weights(checkpoint_dir):
    from safetensors.torch import load_file

    return load_file(os.path.join(checkpoint_dir, "model.safetensors"))


def _trained_rows(run_dir):
    """step -> (epoch, every row trained at that step, the worker count that trained it)."""
    by_step = defaultdict(list)
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("rows_rank"):
            for line in open(os.path.join(run_dir, name)):
                record = json.loads(line)
                by_step[record["step"]].append(record)
    out = {}
    for step, records in by_step.items():
        newest = max(records, key=lambda r: r["time"])["group"]  # a group lost after its checkpoint trained it too
        records = [r for r in records if r["group"] == newest]
        assert len({(r["epoch"], r["world_size"]) for r in records}) == 1
        assert len(records) == records[0]["world_size"]  # every rank of the group recorded the step once
        out[step] = (records[0]["epoch"], sorted(row for r in records for mb in r["rows"] for row in mb),
                     records[0]["world_size"])
    return out


@pytest.fixture(scope="module")
def straight(ray_cluster, tmp_path_factory):
    """The uninterrupted 2-worker run the others must equal."""
    return train(compose(*tiny_overrides(tmp_path_factory.mktemp("straight"), "straight", "num_workers=2", *COMMON)))


def _check_every_row_once(rows, world_sizes):
    assert sorted(rows) == list(range(1, 13))
    assert [rows[s][2] for s in range(1, 13)] == world_sizes
    assert [rows[s][0] for s in range(1, 13)] == [0] * 5 + [1] * 5 + [2] * 2
    for epoch in (0, 1):
        seen = [row for s in range(1, 13) if rows[s][0] == epoch for row in rows[s][1]]
        assert len(seen) == len(set(seen)) == 5 * 48  # no row twice, none skipped but the 38 left over


def _check_matches(summary, straight):
    rows, straight_rows = _trained_rows(summary["run_dir"]), _trained_rows(straight["run_dir"])
    assert all(rows[s][:2] == straight_rows[s][:2] for s in rows)  # the same rows at every step
    records = [r for r in read_metrics(os.path.join(summary["run_dir"], "metrics.jsonl")) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 13))
    assert [r["blocks_seen"] for r in records] == [48 * s for s in range(1, 13)]
    reference, other = _weights(straight["latest_checkpoint"]), _weights(summary["latest_checkpoint"])
    for name in reference:
        torch.testing.assert_close(other[name], reference[name], rtol=0, atol=1e-5)
    assert summary["eval_loss"] == pytest.approx(straight["eval_loss"], abs=1e-5)


@pytest.mark.slow
def test_resume_with_2_then_1_then_2_workers_trains_every_row_once_and_matches(straight, tmp_path):
    """A run stopped after step 4 (2 workers), resumed with 1 worker and stopped after step 8, finished with
    2 workers: every row of each epoch trained exactly once, and the weights equal an uninterrupted
    2-worker run's (the same global batches; dropout keyed by position, not rank)."""

    phases = [("num_workers=2", "debug.fail_at_step=4", "debug.fail_rank=1"),
              ("num_workers=1", "debug.fail_at_step=8", "debug.fail_rank=0")]
    for phase in phases:
        with pytest.raises(TrainingFailed):
            train(compose(*tiny_overrides(tmp_path, "resized", *COMMON, *phase)))
    resized = train(compose(*tiny_overrides(tmp_path, "resized", "num_workers=2", *COMMON)))

    _check_every_row_once(_trained_rows(resized["run_dir"]), [2] * 4 + [1] * 4 + [2] * 4)
    _check_matches(resized, straight)


@pytest.mark.slow
def test_fsdp_sharded_state_resumes_on_other_worker_counts_and_exports(straight, tmp_path):
    """FSDP2 with sharded state, stopped after step 4 (2 workers), resumed with 1 (reading both ranks' shards),
    finished with 2 (reading 1 rank's): the weights equal the uninterrupted DDP run's. The intermediate
    checkpoints hold every rank's slices and no model; `rtune export` consolidates them."""
    from conftest import cli
    from safetensors import safe_open

    from rtune import checkpoint as ckpt

    fsdp = ("strategy=fsdp",)
    phases = [("num_workers=2", "debug.fail_at_step=4", "debug.fail_rank=1"),
              ("num_workers=1", "debug.fail_at_step=8", "debug.fail_rank=0")]
    for phase in phases:
        with pytest.raises(TrainingFailed):
            train(compose(*tiny_overrides(tmp_path, "sharded", *COMMON, *fsdp, *phase)))
    resized = train(compose(*tiny_overrides(tmp_path, "sharded", "num_workers=2", *COMMON, *fsdp)))
    _check_every_row_once(_trained_rows(resized["run_dir"]), [2] * 4 + [1] * 4 + [2] * 4)
    _check_matches(resized, straight)

    step4 = os.path.join(resized["run_dir"], ckpt.dir_name(4))
    files = ckpt.read_marker(step4)["files"]
    assert {"fsdp_shards/rank00000.safetensors", "fsdp_shards/rank00001.safetensors", "config.json"} <= set(files)
    assert not ckpt.has_model_weights(step4) and "optimizer" not in ckpt.load_trainer_state(step4)
    with safe_open(os.path.join(step4, "fsdp_shards", "rank00001.safetensors"), "pt") as f:  # a slice, not all
        wte = f.get_slice("model.transformer.wte.weight").get_shape()
    assert wte[0] < len(_weights(resized["latest_checkpoint"])["transformer.wte.weight"])
    assert ckpt.has_model_weights(resized["latest_checkpoint"])  # the last checkpoint is the run's model
    # Consolidating the last checkpoint's shards gives exactly the model its rank 0 gathered ...
    from rtune.shards import consolidated_model

    final = _weights(resized["latest_checkpoint"])
    consolidated = consolidated_model(resized["latest_checkpoint"]).state_dict()
    assert set(consolidated) == set(final)
    for name, tensor in final.items():
        torch.testing.assert_close(consolidated[name], tensor, rtol=0, atol=0)
    # ... and `rtune export` turns a checkpoint of shards alone into a model.
    proc = cli("export", step4, str(tmp_path / "exported"))
    assert proc.returncode == 0, proc.stderr
    exported = _weights(tmp_path / "exported")
    assert set(exported) - {"lm_head.weight"} == set(final) - {"lm_head.weight"} and not torch.equal(exported["transformer.wte.weight"],
                                                           final["transformer.wte.weight"])


@pytest.mark.slow
def test_elastic_group_continues_with_one_worker_after_losing_a_node(ray_cluster, tmp_path):
    """num_workers=[1,2] on a head and a worker node of 1 CPU each: the worker node is stopped mid-run; Ray
    restarts the group with the 1 worker the cluster still fits, which resumes from the newest checkpoint
    and finishes, every row of each epoch trained once (a fixed global batch, whatever the group size)."""
    from test_cluster import ROOT, _free_port, _own_processes

    from rtune import checkpoint as ckpt

    port, dashboard = _free_port(span=2), _free_port()
    env = {**os.environ, "RTUNE_CLUSTER_DIR": str(tmp_path / "head"), "RTUNE_RAY_TEMP_DIR": f"/tmp/re-{port}"}
    worker_env = {**env, "RTUNE_CLUSTER_DIR": str(tmp_path / "worker"), "RTUNE_RAY_TEMP_DIR": f"/tmp/re-{port}-w"}
    node = ["--join", f"127.0.0.1:{port}"]
    subprocess.run(["bash", "scripts/cluster/start_cluster.sh", "--port", str(port), "--dashboard-port", str(dashboard),
                    "--num-cpus", "1"], cwd=ROOT, env=env, check=True, capture_output=True)
    steps = 30
    metrics = tmp_path / "elastic" / "metrics.jsonl"
    try:
        subprocess.run(["bash", "scripts/cluster/start_cluster.sh", *node, "--num-cpus", "1"], cwd=ROOT, env=worker_env,
                       check=True, capture_output=True)
        overrides = tiny_overrides(tmp_path, "elastic", f"ray_address=127.0.0.1:{port}", "num_workers=[1,2]",
                                   "cpus_per_worker=1", "trainer.max_failures=2", *COMMON,
                                   f"trainer.max_steps={steps}", "trainer.checkpoint_every_steps=5",
                                   "trainer.eval_every_steps=5")
        # Ray's resource view lags a lost node by up to 20 s; a group it cannot place is retried smaller after
        # this timeout (60 s by default).
        driver_env = {**env, "RAY_AUTH_MODE": "token", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "15"}
        driver = subprocess.Popen([sys.executable, "-m", "rtune", "train", *overrides], cwd=ROOT, env=driver_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while driver.poll() is None and time.time() < deadline:  # until a checkpoint is whole on storage
            if ckpt.find_latest(str(tmp_path / "elastic")) is not None:
                break
            time.sleep(0.2)
        subprocess.run(["bash", "scripts/cluster/stop_cluster.sh", *node], cwd=ROOT, env=worker_env, check=True,
                       capture_output=True)
        out, _ = driver.communicate(timeout=400)
        assert driver.returncode == 0, out[-4000:]
    finally:
        subprocess.run(["bash", "scripts/cluster/stop_cluster.sh", *node], cwd=ROOT, env=worker_env,
                       capture_output=True)
        subprocess.run(["bash", "scripts/cluster/stop_cluster.sh", "--port", str(port)], cwd=ROOT, env=env,
                       capture_output=True)
    assert _own_processes(f"/tmp/re-{port}") == [] and _own_processes(f"/tmp/re-{port}-w") == []

    rows = _trained_rows(str(tmp_path / "elastic"))
    assert sorted(rows) == list(range(1, steps + 1))
    sizes = [rows[s][2] for s in range(1, steps + 1)]
    assert sizes[0] == 2 and sizes[-1] == 1 and sizes == sorted(sizes, reverse=True), sizes
    for epoch in range(steps // 5):
        seen = [row for s in rows if rows[s][0] == epoch for row in rows[s][1]]
        assert len(seen) == len(set(seen)) == 5 * 48
    events = [json.loads(line)["message"] for line in open(tmp_path / "elastic" / "events.jsonl")]
    assert "2 worker(s)" in events[0] and "resuming" in events[-1] and "1 worker(s)" in events[-1], events
    records = [r for r in read_metrics(str(metrics)) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    assert [r["blocks_seen"] for r in records] == [48 * s for s in range(1, steps + 1)]
    summary = json.loads((tmp_path / "elastic" / "summary.json").read_text())
    assert summary["final_step"] == steps and summary["eval_loss"] < summary["initial_eval_loss"]


@pytest.mark.parametrize("overrides, message", [
    (("num_workers=[1,2]", "trainer.max_failures=1", "trainer.global_batch_size=12",
      "trainer.micro_batch_size=4"), r"trainer.global_batch_size=12 must be a multiple of num_workers x "
     r"trainer.micro_batch_size for every worker count in num_workers=\[1,2\]: use "
     r"trainer.global_batch_size=16 \(a multiple of 8\) or trainer.micro_batch_size=3$"),
    (("num_workers=3", "trainer.global_batch_size=16", "trainer.micro_batch_size=4"),
     r"use trainer.global_batch_size=12 \(a multiple of 12\)$"),
    (("trainer.global_batch_size=16", "trainer.grad_accum_steps=2"), "not both"),
    (("num_workers=[2,1]", "trainer.max_failures=1"), r"minimum comes first, e.g. num_workers=\[1,2\]"),
    (("num_workers=[1,2]",), "set trainer.max_failures=1 or more"),
    (("num_workers=[1,2]", "trainer.max_failures=1", "strategy=deepspeed"), "needs strategy=ddp or strategy=fsdp"),
    (("num_workers=[1,2,3]",), r"num_workers must be a whole number or \[min, max\]"),
])
def test_worker_counts_and_global_batch_are_checked(overrides, message):
    with pytest.raises(UserError, match=message):
        validate(compose(*overrides))
