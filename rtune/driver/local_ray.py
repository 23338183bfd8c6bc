"""rtune's local Ray: a `ray start --head` process on 127.0.0.1 that the driver joins.

Why a process of its own rather than `ray.init(address="local")`:
- it starts while the driver imports and prepares data (Ray must be initialised on the main thread, so a
  thread cannot overlap it; a process can), and is joined once the preflight is done;
- `python -m rtune up` keeps one running, and later runs on this machine join it instead of starting Ray;
- every Ray process listens on loopback only. Ray resolves "127.0.0.1" to the machine's routable address
  unless it believes multi-node clusters are off (its Windows/macOS mode), so the head runs in that mode
  and so does the driver's address resolution.

A head started for one run dies with the driver (PR_SET_PDEATHSIG on Linux) and is stopped when the run
ends; one started by `rtune up` lives until `rtune down`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

from rtune.errors import UserError

# Not /tmp/ray: a plain ray.init() elsewhere on this machine joins whatever /tmp/ray/ray_current_cluster
# names, and must not find rtune's cluster there. Short, because Ray's unix sockets live under it.
TEMP_DIR = "/tmp/rtune-ray"
READY_TIMEOUT_S = 120


def state_dir() -> str:
    """Where `rtune up` records the cluster it keeps running (pid, address, log)."""
    return os.path.join(os.path.expanduser("~"), ".cache", "rtune", "local-ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the head's process before exec: SIGTERM it when the driver dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def _loopback_driver() -> None:
    """This process resolves "127.0.0.1" to itself, as the head does (see the module docstring)."""
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def prepare_join(address: str) -> None:
    """Before ray.init(address): a loopback-only cluster (rtune's, named as 127.0.0.1:PORT, e.g. by RAY_ADDRESS)
    is joined on loopback. Ray would rewrite 127.0.0.1 to the machine's routable address, where such a cluster
    does not listen; a cluster that does listen there (`ray start` elsewhere) is joined as Ray does it."""
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        return
    from ray._private.services import node_ip_address_from_perspective

    routable = node_ip_address_from_perspective()
    if routable in ("127.0.0.1", "localhost"):
        return
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex((routable, int(port))) != 0:
            _loopback_driver()


class Head:
    """A `ray start --head --block` child process and the address it serves on."""

    def __init__(self, proc: subprocess.Popen, port: int, dashboard_port: int, log_path: str):
        self.proc, self.port, self.dashboard_port, self.log_path = proc, port, dashboard_port, log_path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @classmethod
    def start(cls, num_cpus: int, log_path: str, keep: bool = False) -> Head:
        """Start it and return at once (wait_ready() blocks). keep: outlive this process (`rtune up`)."""
        port, dashboard_port = _free_port(), _free_port()
        args = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--disable-usage-stats",
                "--node-ip-address=127.0.0.1", f"--port={port}", f"--ray-client-server-port={_free_port()}",
                f"--num-cpus={num_cpus}", f"--temp-dir={TEMP_DIR}",
                # Ray Train's placement-group cleaner asks the dashboard's State API about the run (without it,
                # a warning every 2 s and no clean-up); loopback only, on a free port (8265 may be taken)
                "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                # the agent's HTTP port defaults to 52365 on every node: a second cluster could not bind it
                f"--dashboard-agent-listen-port={_free_port()}"]
        env = dict(os.environ)
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only (module docstring)
        # Ray starts workers at nice 15, below its own ~15 helper processes; when training fills every core
        # (2 workers on 2 cores) that priority gap cost throughput here. Training is the point: nice 0.
        env.setdefault("RAY_worker_niceness", "0")
        # Stopping drains nothing: training checkpoints are on storage, and the drain RPC can hang ~40 s.
        env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
        env.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for a new local cluster, said explicitly
        _ensure_token(env)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "w") as log:
            # A session of its own: Ctrl-C reaches the driver, which aborts the run and then stops the head.
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True, preexec_fn=None if keep else _die_with_parent)
        return cls(proc, port, dashboard_port, log_path)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with open(self.log_path, errors="replace") as f:
                if "Ray runtime started" in f.read():
                    return
            if self.proc.poll() is not None:
                raise UserError(f"the local Ray head exited while starting ({_last_line(self.log_path)}); "
                                f"its log: {self.log_path}")
            time.sleep(0.05)
        self.stop()
        raise UserError(f"the local Ray head did not start within {timeout_s:.0f} s; its log: {self.log_path}")

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM: `ray start --block` stops the GCS, raylet and workers it started, then exits."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _ensure_token(env: dict) -> None:
    """`ray start` in token mode needs a token and, unlike ray.init(), does not create one: make it, once per
    home (~/.ray/auth_token, private to the user). Ray's command prints it: it goes nowhere."""
    if env.get("RAY_AUTH_MODE") != "token" or env.get("RAY_AUTH_TOKEN"):
        return
    if os.path.exists(env.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")):
        return
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def _last_line(path: str) -> str:
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1][-300:] if lines else "no output"


_PENDING: Optional[Head] = None  # started early for this process's run, not yet joined
_STARTED: Optional[Head] = None  # joined, and stopped by shutdown()


def start_early(num_cpus: int) -> None:
    """Start this run's head now, to be joined by connect() once the driver's preflight is done."""
    global _PENDING
    if _PENDING is None and kept_address() is None:
        _PENDING = Head.start(num_cpus, os.path.join(TEMP_DIR, f"head-{os.getpid()}.log"))


def cancel_early() -> None:
    """The preflight failed: the head started for it goes (no Ray process outlives a refused run)."""
    global _PENDING
    if _PENDING is not None:
        _PENDING.stop()
        _PENDING = None


def connect(num_cpus: int, runtime_env: dict, log_to_driver: bool = True) -> bool:
    """Join the cluster `rtune up` keeps (True if so), else this run's own head, started here if needed."""
    global _PENDING, _STARTED
    import atexit

    import ray

    kept = kept_address()
    if kept is not None:
        print(f"[rtune] joining the local Ray cluster `python -m rtune up` started ({kept}); "
              "`python -m rtune down` stops it", flush=True)
        address = kept
    else:
        head, _PENDING = _PENDING or Head.start(num_cpus, os.path.join(TEMP_DIR, f"head-{os.getpid()}.log")), None
        head.wait_ready()
        print(f"[rtune] local Ray on 127.0.0.1 (dashboard {head.dashboard_url()}, logs {TEMP_DIR}/session_latest/logs)",
              flush=True)
        _STARTED = head
        address = head.address
    _loopback_driver()
    _use_token_auth()
    ray.init(address=address, _node_ip_address="127.0.0.1", runtime_env=runtime_env, logging_level="warning",
             log_to_driver=log_to_driver)
    # Registered after ray.init, so it runs before Ray's own exit hook: leave the cluster, then stop the head
    # (stopped first, the driver would spend its exit trying to reach it).
    atexit.register(shutdown)
    return kept is not None


def _use_token_auth() -> None:
    """Send the cluster's token (~/.ray/auth_token, written by the head): what Ray's own local ray.init()
    does for itself, and only done by Ray for addresses it finds on its own, not for one it is given."""
    if os.environ.get("RAY_AUTH_MODE") is None:
        from ray._raylet import Config

        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")  # Ray caches its config; re-read so this process sends the token


def shutdown() -> None:
    """Leave the cluster; stop it if this process started it."""
    global _STARTED
    import ray

    ray.shutdown()
    if _STARTED is not None:
        _STARTED.stop()
        _STARTED = None


# `python -m rtune up` / `down`: one local cluster kept for later runs.

def _state_file() -> str:
    return os.path.join(state_dir(), "state.json")


def _read_state() -> Optional[dict]:
    try:
        with open(_state_file()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _alive(state: dict) -> bool:
    try:
        os.kill(state["pid"], 0)
    except (OSError, KeyError, TypeError):
        return False
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", state["port"])) == 0


def kept_address() -> Optional[str]:
    """The address of the cluster `rtune up` keeps, if it is running (a dead one's record is removed)."""
    state = _read_state()
    if state is None:
        return None
    if not _alive(state):
        os.remove(_state_file())
        return None
    return f"127.0.0.1:{state['port']}"


def up(num_cpus: Optional[int] = None) -> str:
    """Start the kept cluster (or report the running one); returns a line for the user."""
    kept = kept_address()
    if kept is not None:
        return f"a local Ray cluster started by `python -m rtune up` is already running at {kept}"
    num_cpus = num_cpus or os.cpu_count() or 1
    head = Head.start(num_cpus, os.path.join(state_dir(), "ray.log"), keep=True)
    head.wait_ready()
    with open(_state_file(), "w") as f:
        json.dump({"pid": head.proc.pid, "port": head.port, "num_cpus": num_cpus, "log": head.log_path}, f)
    return (f"local Ray cluster running at {head.address} ({num_cpus} CPUs, loopback only, pid {head.proc.pid}; "
            f"dashboard {head.dashboard_url()}; log {head.log_path}): `python -m rtune train ...` runs "
            "join it and skip Ray's start-up; stop it with `python -m rtune down`")


def down() -> str:
    state = _read_state()
    if state is None or not _alive(state):
        if state is not None:
            os.remove(_state_file())
        return "no local Ray cluster started by `python -m rtune up` is running"
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(state["pid"], 0)
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.killpg(state["pid"], signal.SIGKILL)
    os.remove(_state_file())
    return f"stopped the local Ray cluster at 127.0.0.1:{state['port']} (pid {state['pid']})"
