"""Experiment trackers on the real thing: an MLflow tracking server (SQLite) started here on 127.0.0.1,
TensorBoard event files read back with tensorboard's own reader, W&B in offline mode.

The driver-kill re-run (one MLflow run, each step once, TensorBoard purged) is in test_failures.py and
the multirun parent/child grouping in test_sweeps.py, on runs those tests make anyway.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import compose, run_with_fault, tiny_overrides
from rtune.errors import UserError
from rtune.metrics import read_metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensorboard_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a TensorBoard log directory, as TensorBoard itself reads it (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def logged_series(run_dir) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as per-metric (step, value) series: what every tracker must hold."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in read_metrics(os.path.join(run_dir, "metrics.jsonl")):
        for key, value in record.items():
            if key not in ("step", "time") and isinstance(value, (int, float)):
                series.setdefault(key, []).append((record["step"], float(value)))
    return series


def assert_same_series(found, expected):
    assert sorted(found) == sorted(expected)
    for key, points in expected.items():
        assert [s for s, _ in found[key]] == [s for s, _ in points], key
        assert [v for _, v in found[key]] == pytest.approx([v for _, v in points], rel=1e-5), key


def wandb_history(run_dir) -> list[dict]:
    """History rows of the W&B offline runs under run_dir, decoded from the .wandb files (a LevelDB-style
    log of protobuf records: 7-byte file header, 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for path in sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))):
        data, pos, pending = open(path, "rb").read(), 7, b""
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
                pos += 32768 - pos % 32768
                continue
            _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
            pending = chunk if kind in (1, 2) else pending + chunk
            if kind in (1, 4):
                record = pb.Record()
                record.ParseFromString(pending)
                if record.WhichOneof("record_type") == "history":
                    items = record.history.item
                    rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    return rows


def test_tracking_config_errors_name_the_fix(monkeypatch, tmp_path):
    import importlib.util

    from rtune.tracking import check_backends, flat_params, redact

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install 'rtune\[tracking\]'"):
        check_backends(compose("tracking.backends=[tensorboard,wandb]"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(UserError, match="set tracking.mlflow_uri"):
        check_backends(compose("tracking.backends=[mlflow]", "storage_path=s3://bucket/runs"))
    params = flat_params({"model": {"hf_token": "x", "name_or_path": "gpt2"}, "tracking": {"backends": ["mlflow"]}})
    assert params == {"model.name_or_path": "gpt2", "tracking.backends": '["mlflow"]'}
    assert redact("https://user:pw@mlflow.example.com/x") == "https://mlflow.example.com/x"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` with a SQLite backend and proxied artifacts, on 127.0.0.1."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--workers", "1",
                               "--artifacts-destination", str(root / "artifacts")],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError as err:
            if server.poll() is not None or time.monotonic() > deadline:
                log_tail = (root / "server.log").read_text()[-2000:]
                raise AssertionError(f"mlflow server did not start: {log_tail}") from err
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_mlflow_server_and_tensorboard_hold_every_metric_through_a_worker_restart(ray_cluster, tmp_path,
                                                                                   mlflow_server):
    from mlflow.tracking import MlflowClient

    _, summary = run_with_fault(tmp_path, "tracked", "tracking.backends=[tensorboard,mlflow]",
                                f"tracking.mlflow_uri={mlflow_server}", "tracking.project=rtune-tests")
    run_dir = summary["run_dir"]
    expected = logged_series(run_dir)
    assert [s for s, _ in expected["loss"]] == list(range(1, 9)) and [s for s, _ in expected["eval_loss"]] == [0, 4, 8]

    # TensorBoard: every scalar of metrics.jsonl at its step, once, in the files TensorBoard reads.
    assert_same_series(tensorboard_scalars(os.path.join(run_dir, "tensorboard")), expected)

    # MLflow: one run (the recovered worker group continued it), params, every metric history, artifacts.
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("rtune-tests")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == json.load(open(os.path.join(run_dir, "tracking.json")))["mlflow"]
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["optim.lr"] == "0.003" and run.data.params["num_workers"] == "2"
    assert run.data.params["tracking.backends"] == '["tensorboard", "mlflow"]'
    assert run.data.tags["strategy"] == "ddp" and run.data.tags["data"] == "package:rust_sample"
    found = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                     key=lambda m: m.step)] for key in run.data.metrics}
    assert_same_series(found, expected)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"summary.json", "loss_curve.png", "MODEL_CARD.md"}  # no weights without log_model
    local = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))
    assert json.load(open(local))["final_step"] == 8
    # The start line named the run; the driver's line named where everything goes.
    events = [json.loads(line) for line in open(os.path.join(run_dir, "events.jsonl"))]
    assert all(f"MLflow: run {run.info.run_id} at {mlflow_server}" in e["message"] for e in events)


@pytest.mark.slow
def test_unreachable_mlflow_warns_once_and_wandb_offline_keeps_the_metrics(ray_cluster, tmp_path, monkeypatch):
    from rtune.driver.launch import train

    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose(*tiny_overrides(tmp_path, "offline", "num_workers=2", "trainer.max_steps=6",
                                  "trainer.eval_every_steps=3", "trainer.checkpoint_every_steps=6",
                                  "tracking.backends=[tensorboard,mlflow,wandb]", "tracking.wandb_mode=offline",
                                  f"tracking.mlflow_uri=http://127.0.0.1:{free_port()}"))
    summary = train(cfg)
    assert summary["final_step"] == 6
    run_dir = summary["run_dir"]
    warnings = [e["message"] for e in map(json.loads, open(os.path.join(run_dir, "events.jsonl"))) if e.get("warning")]
    assert len(warnings) == 1 and "tracker mlflow is off" in warnings[0] and "training goes on" in warnings[0]
    assert json.load(open(os.path.join(run_dir, "tracking.json"))).keys() == {"wandb"}
    expected = logged_series(run_dir)
    assert [s for s, _ in expected["loss"]] == list(range(1, 7))
    history = wandb_history(run_dir)
    assert_same_series({key: [(row["_step"], row[key]) for row in history if key in row] for key in expected}, expected)
    assert_same_series(tensorboard_scalars(os.path.join(run_dir, "tensorboard")), expected)
