"""A real Ray head started by scripts/cluster/start_cluster.sh (dashboard on 127.0.0.1), a worker node joined
to it, runs submitted with `python -m rtune submit` and with plain `ray job submit`, and
scripts/cluster/stop_cluster.sh stopping exactly what it started."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TINY = ["num_workers=1", "trainer.max_steps=6", "trainer.eval_every_steps=3", "trainer.checkpoint_every_steps=3",
        "model.from_config.n_layer=2", "model.from_config.n_embd=64", "model.from_config.n_head=2",
        "data.seq_len=64", "trainer.micro_batch_size=4", "optim.warmup_steps=2"]


def _free_port(span: int = 1) -> int:
    """A port p with p .. p+span-1 free on this machine."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span < 65000 and all(_is_free(port + i) for i in range(span)):
            return port
    raise RuntimeError("no free port")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def _own_processes(temp_dir: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", f"{temp_dir}/"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def _tagged_processes(state_dir: str) -> list[str]:
    """Processes of a node start_cluster.sh started, by the tag in their environment (Ray renames its actors)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"RTUNE_NODE_TAG={state_dir}".encode() in f.read().split(b"\0"):
                    found.append(f"{pid} {open(f'/proc/{pid}/cmdline').read()[:80]}")
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def head(tmp_path_factory, ray_cluster):
    """A head + one worker node, on ports of their own; the session's local Ray keeps running beside it."""
    state = tmp_path_factory.mktemp("cluster")
    port, dashboard = _free_port(span=2), _free_port()
    env = {**os.environ, "RTUNE_CLUSTER_DIR": str(state / "head"), "RTUNE_RAY_TEMP_DIR": f"/tmp/rt-{port}"}
    # The worker node keeps a cache of its own (data.engine=ray copies shards there, never reads the head's).
    worker_env = {**env, "RTUNE_CLUSTER_DIR": str(state / "worker"), "RTUNE_CACHE_DIR": str(state / "worker-cache"),
                  "RTUNE_RAY_TEMP_DIR": f"/tmp/rt-{port}-w"}
    started = subprocess.run(["bash", "scripts/cluster/start_cluster.sh", "--port", str(port), "--dashboard-port",
                              str(dashboard), "--num-cpus", "2"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr
    url = f"http://127.0.0.1:{dashboard}"
    assert url in started.stdout
    joined = subprocess.run(["bash", "scripts/cluster/start_cluster.sh", "--join", f"127.0.0.1:{port}", "--num-cpus",
                             "1"], cwd=ROOT, env=worker_env, capture_output=True, text=True)
    info = {"url": url, "port": port, "temp_dir": f"/tmp/rt-{port}", "env": env,
            "worker_cache": state / "worker-cache"}
    try:
        assert joined.returncode == 0, joined.stdout + joined.stderr
        yield info
    finally:
        subprocess.run(["bash", "scripts/cluster/stop_cluster.sh", "--join", f"127.0.0.1:{port}"], cwd=ROOT,
                       env=worker_env)
        stopped = subprocess.run(["bash", "scripts/cluster/stop_cluster.sh", "--port", str(port)], cwd=ROOT, env=env,
                                 capture_output=True, text=True)
        assert stopped.returncode == 0, stopped.stderr
    # Only its own cluster is gone: nothing of it is left, and the session's Ray still answers.
    assert _own_processes(info["temp_dir"]) == [] and _own_processes(f"{info['temp_dir']}-w") == []
    assert _tagged_processes(str(state / "head")) == [] and _tagged_processes(str(state / "worker")) == []
    import ray

    assert ray.is_initialized() and ray.cluster_resources().get("CPU", 0) >= 1


def _submit(head, tmp_path, *overrides, extra=()):
    return subprocess.run([sys.executable, "-m", "rtune", "submit", "--address", head["url"], *extra, "--", "train",
                           *overrides], cwd=ROOT, capture_output=True, text=True, timeout=400)


def test_submit_runs_on_two_nodes_with_ray_data_to_a_loadable_checkpoint(head, tmp_path):
    """A submitted job whose data Ray Data prepares on the cluster (data.engine=ray) into a shared cache given
    as a URI: 3 workers on 2 + 1 CPUs, so one trains on the worker node, which reads the shards into its own
    cache (never the head's); the rows equal the datasets engine's on the same files."""
    from ray.job_submission import JobSubmissionClient
    from transformers import AutoModelForCausalLM

    from rtune.data.pipeline import prepare_data
    from rtune.driver.preflight import finalize
    from rtune.driver.submit import auth_headers
    from tests.conftest import compose
    from tests.test_data_engine import _corpus, _rows

    corpus = _corpus(tmp_path / "corpus", n_files=6, docs_per_file=40)
    data = [f"data.path={corpus}", "data.data_dir=null", "data.engine=ray",
            f"data.cache_uri=file://{tmp_path}/shared", "num_workers=3"]
    out = _submit(head, tmp_path, f"storage_path={tmp_path}", "run_name=submitted", *TINY, *data)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "SUCCEEDED" in out.stdout
    job_id = next(line.split()[3] for line in out.stdout.splitlines() if line.startswith("[rtune] submitted job"))
    client = JobSubmissionClient(head["url"], headers=auth_headers())
    assert str(client.get_job_status(job_id)) == "SUCCEEDED"
    logs = client.get_job_logs(job_id)
    assert "step 6/6" in logs
    # Two nodes and a local storage path: the run says so.
    assert "is a local path and this Ray cluster has 2 nodes" in logs
    summary = json.loads((tmp_path / "submitted" / "summary.json").read_text())
    assert summary["final_step"] == 6 and summary["eval_loss"] < summary["initial_eval_loss"]
    model = AutoModelForCausalLM.from_pretrained(summary["latest_checkpoint"])
    assert model.config.n_layer == 2
    # Tokenized by the actor pool (which node takes which of these tiny files is a matter of timing; the
    # benchmark shows the spread); each node's workers read the shards from the URI into their own cache.
    prepared_line = [line for line in logs.splitlines() if "data.engine=ray:" in line]
    assert prepared_line and re.search(r"6 file\(s\)( in \d+ parts)? tokenized by [1-3] actor\(s\) on [12] node\(s\)",
                                       prepared_line[0]), prepared_line
    worker_copies = list((head["worker_cache"] / "shards").iterdir())
    assert len(worker_copies) == 1 and (worker_copies[0] / "manifest.json").exists()
    reference, _ = prepare_data(finalize(compose(*TINY, *data[:2], f"storage_path={tmp_path}")))
    for split in ("train", "val"):
        ours, theirs = _rows(worker_copies[0] / split), _rows(getattr(reference, f"{split}_path"))
        assert ours.shape == theirs.shape and (ours == theirs).all(), split


def test_bad_override_fails_the_job_with_the_clear_error(head, tmp_path):
    out = _submit(head, tmp_path, "trainer.max_step=6")
    assert out.returncode == 1
    assert "FAILED" in out.stderr and "did you mean trainer.max_steps?" in out.stderr, out.stderr
    assert "Traceback" not in out.stdout + out.stderr

    # The same run through plain `ray job submit` (README): the CLI wants RAY_AUTH_MODE=token.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_API_SERVER_ADDRESS": head["url"]}
    plain = subprocess.run(["ray", "job", "submit", "--working-dir", ".", "--", "python", "-m", "rtune", "train",
                            "trainer.max_step=6"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode != 0
    assert "unknown config key 'trainer.max_step': did you mean trainer.max_steps?" in plain.stdout + plain.stderr


def test_submit_without_a_cluster_or_token_says_how_to_fix_it(head, tmp_path):
    unreachable = subprocess.run([sys.executable, "-m", "rtune", "submit", "--address", f"http://127.0.0.1:{_free_port()}",
                                  "--", "train"], cwd=ROOT, capture_output=True, text=True)
    assert unreachable.returncode == 2 and "start_cluster.sh" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1
    wrong = subprocess.run([sys.executable, "-m", "rtune", "submit", "--address", head["url"], "--no-wait", "--",
                            "train"], cwd=ROOT, env={**os.environ, "RAY_AUTH_TOKEN": "not-the-token"},
                           capture_output=True, text=True)
    assert wrong.returncode == 2 and "auth_token" in wrong.stderr
    assert "not-the-token" not in wrong.stdout + wrong.stderr
