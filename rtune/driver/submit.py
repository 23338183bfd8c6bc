"""`python -m rtune submit [--address URL] [--wait/--no-wait] -- train <overrides>`: a run on a Ray cluster.

The run goes through Ray's Jobs API (the dashboard's HTTP endpoint) with this checkout as the job's
`working_dir`, so the cluster runs exactly the code and `conf/` you have here; the job's entrypoint is
`python -m rtune train <overrides>`. The same job can be started with `ray job submit` (README).

Ray 2.60 turns token authentication on: the token is read from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token and sent as `Authorization: Bearer ...`; it is never printed or put in the job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from rtune.errors import UserError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Not shipped to the cluster: run outputs, environments, caches and git history.
WORKING_DIR_EXCLUDES = [".git", ".venv", "venv", "results", "outputs", "multirun", "**/__pycache__", "*.npy",
                        ".pytest_cache", ".ruff_cache", "*.egg-info", "conf/local"]
# Exit codes: the job's status decides.
EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 130}
COMMANDS = ("train", "tune", "serve")
SUBMIT_RETRY_S = 60  # a freshly started head takes a few seconds to register its job agents


def project_root() -> Path:
    """The checkout that holds rtune/ and conf/: it becomes the job's working_dir."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "conf" / "config.yaml").exists():
        raise UserError(f"rtune submit ships the checkout's code and conf/, but {root} has no conf/config.yaml: "
                        "run it from a git clone of rtune (pip install -e .)")
    return root


def auth_headers() -> Dict[str, str]:
    """`Authorization: Bearer <token>` from Ray's usual places, or nothing (the cluster may not want one)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
        token = path.read_text().strip() if path.is_file() else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def job_address(cli_address: Optional[str]) -> str:
    """The Jobs API URL: --address, RAY_API_SERVER_ADDRESS, an http RAY_ADDRESS, or the local default."""
    address = cli_address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address and os.environ.get("RAY_ADDRESS", "").startswith("http"):
        address = os.environ["RAY_ADDRESS"]
    address = address or DEFAULT_ADDRESS
    if "://" not in address:
        address = f"http://{address}"
    return address.rstrip("/")


def build_entrypoint(command: List[str], local_storage: Optional[str]) -> List[str]:
    """`python -m rtune train ...` as the cluster runs it; a relative default storage_path is made absolute.

    Without it the job would write into its working_dir copy, which Ray deletes with the job.
    """
    if not command or command[0] not in COMMANDS:
        raise UserError(f"submit needs a command after `--`: python -m rtune submit -- train|tune|serve <args> "
                        f"(got {' '.join(command) or 'nothing'})")
    overrides = command[1:]
    if command[0] == "serve":  # an endpoint writes nothing to storage; it runs until `rtune serve --stop`
        return ["python", "-m", "rtune", "serve", *overrides]
    if local_storage and not any(o.split("=")[0].lstrip("+~") == "storage_path" for o in overrides):
        overrides = [*overrides, f"storage_path={local_storage}"]
    return ["python", "-m", "rtune", command[0], *overrides]


def submission_id(overrides: List[str]) -> str:
    """A readable, unique job id: the run name when one is given."""
    run_name = next((o.split("=", 1)[1] for o in overrides if o.startswith("run_name=")), "")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", run_name)[:40].strip("-")
    return f"rtune-{slug + '-' if slug else ''}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def parse_args(argv: List[str]):
    if "--" not in argv:
        raise UserError("usage: python -m rtune submit [--address URL] [--no-wait] -- train <overrides>")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m rtune submit", add_help=True)
    parser.add_argument("--address", help=f"Ray Jobs API (dashboard) URL; default $RAY_API_SERVER_ADDRESS or "
                                          f"{DEFAULT_ADDRESS}")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                        help="stream the job's logs and exit with its status (default), or return at once")
    parser.add_argument("--storage-path", default=None,
                        help="storage_path for the run when the overrides name none (default: ./results, absolute)")
    parser.add_argument("--entrypoint-num-cpus", type=float, default=0,
                        help="CPUs reserved for the job's driver (the training workers reserve their own)")
    options = parser.parse_args(argv[:split])
    return options, argv[split + 1:]


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except Exception as err:  # ConnectionError, or Ray's auth message
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        # HTTP status codes as whole words: a port such as 44015 holds "401" too
        if re.search(r"\b40[13]\b", text) or "uthenticat" in text:
            raise UserError(f"the Ray cluster at {address} refused the request ({text[:120]}): copy the head "
                            "node's ~/.ray/auth_token here or set RAY_AUTH_TOKEN") from None
        raise UserError(f"cannot reach the Ray Jobs API at {address} ({text[:160]}): start a cluster with "
                        "scripts/cluster/start_cluster.sh or pass --address http://<head>:8265") from None


async def _stream_logs(client, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):
        print(chunk, end="", flush=True)


def _last_error(logs: str) -> Optional[str]:
    """rtune's own one-line error from the job's output, else the last line of a traceback."""
    lines = [line.strip() for line in logs.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("rtune: error:"):
            return line[len("rtune: error:"):].strip()
    return lines[-1] if lines else None


def main(argv: List[str]) -> int:
    options, command = parse_args(argv)
    root = project_root()
    storage = options.storage_path or os.path.abspath("results")
    entrypoint = build_entrypoint(command, storage)
    address = job_address(options.address)
    client = _client(address)
    job_id = submission_id(command[1:])
    runtime_env = {"working_dir": str(root), "excludes": WORKING_DIR_EXCLUDES,
                   "env_vars": {"PYTHONUNBUFFERED": "1", "RTUNE_SUBMITTED_JOB": job_id}}
    deadline = time.monotonic() + SUBMIT_RETRY_S
    while True:
        try:
            client.submit_job(entrypoint=shlex.join(entrypoint), submission_id=job_id, runtime_env=runtime_env,
                              entrypoint_num_cpus=options.entrypoint_num_cpus,
                              metadata={"rtune_command": shlex.join(command)})
            break
        except RuntimeError as err:  # a cluster that just started has no job agent registered yet
            if "try again later" not in str(err) or time.monotonic() > deadline:
                raise UserError(f"the Ray Jobs API at {address} refused the job: {str(err).splitlines()[0]}") \
                    from None
            time.sleep(2)
    print(f"[rtune] submitted job {job_id} to {address}: {shlex.join(entrypoint)}", flush=True)
    print(f"[rtune] watch it on the dashboard ({address}/#/jobs/{job_id}) or: ray job logs -f {job_id} "
          f"(RAY_AUTH_MODE=token RAY_API_SERVER_ADDRESS={address})", flush=True)
    if not options.wait:
        return 0
    try:
        asyncio.run(_stream_logs(client, job_id))
    except KeyboardInterrupt:
        print(f"\n[rtune] stopped following; job {job_id} keeps running. Stop it with: ray job stop {job_id}",
              file=sys.stderr, flush=True)
        return 130
    status = str(client.get_job_status(job_id))
    for _ in range(30):  # the log stream can close a moment before the status turns terminal
        if status in EXIT_CODES:
            break
        time.sleep(1)
        status = str(client.get_job_status(job_id))
    status = status.split(".")[-1]
    if status == "SUCCEEDED":
        print(f"[rtune] job {job_id} SUCCEEDED", flush=True)
        return 0
    info = client.get_job_info(job_id)
    reason = _last_error(client.get_job_logs(job_id)) or info.message or "no output"
    print(f"rtune: error: job {job_id} {status}: {reason}", file=sys.stderr, flush=True)
    return EXIT_CODES.get(status, 1)
