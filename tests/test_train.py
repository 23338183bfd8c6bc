"""Real Ray Train runs on the CPU (gloo): loss falls, checkpoints reload exactly, resume is exact.

Each test calls the same `rtune.launch.train` that `python -m rtune train` calls, on the session's
local Ray cluster, with a tiny model on the bundled Rust corpus.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from conftest import compose, tiny_overrides
from rtune.driver.launch import TrainingFailed, train
from rtune.metrics import read_metrics

pytestmark = pytest.mark.slow


def _weights(ckpt_dir: str) -> dict:
    return load_file(os.path.join(ckpt_dir, "model.safetensors"))


def test_two_workers_loss_falls_and_checkpoint_reloads_exactly(ray_cluster, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rtune.data.pipeline import prepare_data
    from rtune.data.rows import PackedRows
    from rtune.worker.lm import TokenLogprobs
    from rtune.worker.loop import evaluate

    cfg = compose(*tiny_overrides(tmp_path, "two-workers", "num_workers=2", "trainer.max_steps=24",
                                  "trainer.eval_every_steps=8", "trainer.checkpoint_every_steps=12",
                                  "optim.lr=3e-3"))
    summary = train(cfg)
    run_dir = tmp_path / "two-workers"
    assert summary["final_step"] == 24
    assert summary["eval_loss"] < summary["initial_eval_loss"] - 1.0, summary  # it learned something real
    assert json.loads((run_dir / "summary.json").read_text())["final_step"] == 24
    assert (run_dir / "loss_curve.png").stat().st_size > 1000
    records = read_metrics(str(run_dir / "metrics.jsonl"))
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 25))
    assert all(r["tokens_per_s"] > 0 for r in records if "loss" in r)

    latest = summary["latest_checkpoint"]
    assert latest.endswith("checkpoint_00000024") and summary["best_checkpoint"]
    model = AutoModelForCausalLM.from_pretrained(latest)
    tokenizer = AutoTokenizer.from_pretrained(latest)
    # The reloaded model reproduces the eval loss the workers measured on the trained model.
    prepared, _ = prepare_data(cfg)
    val = PackedRows(prepared.val_path, tokenizer.pad_token_id)
    no_autocast = torch.autocast("cpu", enabled=False)
    reloaded_loss = evaluate(TokenLogprobs(model), val, 4, None, rank=0, world_size=1, device=torch.device("cpu"),
                             autocast=no_autocast)["eval_loss"]
    assert reloaded_loss == pytest.approx(summary["eval_loss"], abs=1e-5)
    with open(os.path.join(latest, "rtune_config.json")) as f:
        assert json.load(f)["run_name"] == "two-workers"

    # The same figures reach Ray's metrics endpoint (what Prometheus scrapes), labelled by run.
    exported = _scrape_rtune_metrics("two-workers", until=lambda m: m.get("rtune_step") == 24)
    assert exported["rtune_eval_loss"] == pytest.approx(summary["eval_loss"], rel=1e-6)
    assert exported["rtune_restarts"] == 0 and exported["rtune_tokens_per_second"] > 0


def _scrape_rtune_metrics(run: str, until, timeout_s: float = 60) -> dict:
    """rtune's gauges for one run from every node's Prometheus endpoint (Ray exports every few seconds)."""
    import re
    import time
    import urllib.request

    import ray

    found: dict = {}
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for node in ray.nodes():
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            for name, labels, value in re.findall(r"^ray_(rtune_\w+)\{(.*)\} (\S+)$", body, flags=re.M):
                if f'run="{run}"' in labels:
                    found[name] = float(value)
        if until(found):
            return found
        time.sleep(2)
    raise AssertionError(f"rtune metrics for run {run} never reached the expected values: {found}")


def test_resume_is_exact_and_recovers_a_killed_worker(ray_cluster, tmp_path):
    """Uninterrupted vs killed-at-step-4-and-resumed: same steps, same weights (to 1e-6).

    The interrupted run SIGKILLs rank 1 right after step 4's checkpoint. With max_failures=0 the run
    fails and a re-run with the same run_name resumes; with max_failures=1 Ray restarts the workers
    and rtune resumes from storage inside the same fit().
    """
    common = ("num_workers=2", "trainer.max_steps=8", "trainer.checkpoint_every_steps=4",
              "trainer.eval_every_steps=4", "trainer.eval_max_batches=2")
    straight = train(compose(*tiny_overrides(tmp_path, "straight", *common)))

    broken = compose(*tiny_overrides(tmp_path, "resumed", *common, "debug.fail_at_step=4", "debug.fail_rank=1"))
    with pytest.raises(TrainingFailed, match="resume with"):
        train(broken)
    assert (tmp_path / "resumed" / "checkpoint_00000004" / "rtune_checkpoint.json").exists()
    resumed = train(compose(*tiny_overrides(tmp_path, "resumed", *common)))

    recovered = train(compose(*tiny_overrides(tmp_path, "recovered", *common, "debug.fail_at_step=4",
                                              "debug.fail_rank=1", "trainer.max_failures=1")))

    for summary in (resumed, recovered):
        assert summary["final_step"] == 8
        records = read_metrics(os.path.join(summary["run_dir"], "metrics.jsonl"))
        assert [r["step"] for r in records if "loss" in r] == list(range(1, 9))  # each step logged once
        reference, other = _weights(straight["latest_checkpoint"]), _weights(summary["latest_checkpoint"])
        assert reference.keys() == other.keys()
        for name in reference:
            torch.testing.assert_close(other[name], reference[name], rtol=0, atol=1e-6)
        assert summary["eval_loss"] == pytest.approx(straight["eval_loss"], abs=1e-6)


def test_one_worker_run_on_uri_storage_and_generate(ray_cluster, tmp_path):
    """One worker, storage given as a URI (file://: the same pyarrow filesystem layer as s3:// and gs://)."""
    import subprocess
    import sys

    overrides = tiny_overrides(tmp_path, "one", "num_workers=1", "trainer.max_steps=4",
                               "trainer.checkpoint_every_steps=4", "trainer.eval_every_steps=4")
    overrides = [f"storage_path=file://{tmp_path}" if o.startswith("storage_path=") else o for o in overrides]
    summary = train(compose(*overrides))
    assert summary["final_step"] == 4 and summary["num_workers"] == 1
    assert 0.99 < summary["packing_non_pad_fraction"] <= 1.0 and summary["steady_mfu"] > 0
    from ray.util.state import list_actors  # a local cluster starts no watcher for cloud nodes being preempted

    assert not list_actors(filters=[("class_name", "=", "PreemptionWatcher")], detail=True)
    latest = summary["latest_checkpoint"].removeprefix("file://")
    assert latest == str(tmp_path / "one" / "checkpoint_00000004") and os.path.isdir(latest)
    gen = subprocess.run([sys.executable, "-m", "rtune", "generate", latest,
                          "prompt=fn main() {", "max_new_tokens=6"], capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0 and gen.stdout.startswith("fn main() {"), gen.stderr


def test_dashboard_listens_on_loopback_only(ray_cluster):
    import ray

    url = ray._private.worker.global_worker.node.address_info["webui_url"]
    assert url.split(":")[0] in ("127.0.0.1", "localhost"), url


def test_dashboard_requires_the_auth_token(ray_cluster):
    """Ray's token authentication stays on: no token, no answer; the local token opens it."""
    import urllib.error
    import urllib.request

    import ray

    url = "http://" + ray._private.worker.global_worker.node.address_info["webui_url"] + "/api/jobs/"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code in (401, 403)
    token = open(os.path.expanduser("~/.ray/auth_token")).read().strip()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    assert urllib.request.urlopen(request, timeout=10).status == 200
