"""rtune's local Ray (rtune/driver/local_ray.py): loopback only, and the cluster `rtune up` keeps for later runs."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

pytestmark = pytest.mark.slow  # starts Ray, and a run
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def test_the_local_cluster_listens_on_loopback_only(ray_cluster):
    """Every socket the head's processes (GCS, raylet, dashboard, agents, workers) listen on is 127.0.0.1.

    Ray resolves 127.0.0.1 to the machine's routable address by itself (and listens on all interfaces);
    rtune's head runs in Ray's single-machine mode so that nothing is reachable from outside."""
    import ray

    from rtune.driver import local_ray

    assert local_ray._STARTED is not None, "the session's cluster is rtune's own head"
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}
    tree = psutil.Process(local_ray._STARTED.proc.pid)
    pids = {tree.pid, *(p.pid for p in tree.children(recursive=True))}
    listening = [c.laddr for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert len(listening) >= 5, listening  # GCS, raylet, object manager, dashboard, agents at least
    assert {addr.ip for addr in listening} <= LOOPBACK, listening


def _rtune(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rtune", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_up_keeps_a_cluster_that_runs_join_and_down_stops_it(tmp_path):
    from conftest import tiny_overrides

    # A home of its own: the kept cluster's record (~/.cache/rtune/local-ray) and Ray's token (~/.ray).
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    env.pop("RAY_ADDRESS", None)
    up = _rtune("up", "--num-cpus", "2", env=env)
    assert "local Ray cluster running at 127.0.0.1:" in up.stdout
    pid = int(up.stdout.split("pid ")[1].split(";")[0])
    try:
        assert "already running" in _rtune("up", env=env).stdout
        run = _rtune("train", *tiny_overrides(tmp_path, "joined", "num_workers=1", "trainer.max_steps=2"), env=env)
        assert "joining the local Ray cluster `python -m rtune up` started" in run.stdout
        assert "final_step                  2" in run.stdout
        assert psutil.pid_exists(pid), "a run leaves the kept cluster running"
        assert "stopped the local Ray cluster" in _rtune("down", env=env).stdout
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert "no local Ray cluster" in _rtune("down", env=env).stdout
    finally:
        if psutil.pid_exists(pid):
            os.killpg(pid, 15)
