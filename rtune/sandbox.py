"""The one sandbox every check of generated code goes through: each check in a fresh jail (`jail.py`) with
wall-clock and CPU limits, address-space, file-size and process-count limits, an environment without secrets,
its output capped, and no network where the machine allows it.

    run(files, steps) -> the jail's report: the isolation reached and each step's exit code or signal,
                         whether it timed out, its seconds, and the first `output_bytes` of stdout and stderr

The steps run as a user id of their own (root machines: a random id in [UID_BASE, UID_BASE + UID_SPAN), so the
process limit binds and nothing the checking process can read is theirs), in new mount, network and PID
namespaces, with private size-limited tmpfs over every world-writable directory. See `jail.py` for what less
privileged machines get.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from rtune.errors import UserError

JAIL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jail.py")
UID_BASE, UID_SPAN = 2_000_000, 1_000_000
# The environment of every sandboxed step: nothing of the caller's (no HF_TOKEN, tracker keys, Ray tokens).
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp"}


@dataclass(frozen=True)
class Limits:
    """What one step may use.

    Args:
        timeout_s: Wall-clock seconds before every process of the step is killed.
        cpu_s: CPU seconds (RLIMIT_CPU).
        memory_mb: Address space per process (RLIMIT_AS).
        file_mb: Largest file a process may write (RLIMIT_FSIZE).
        procs: Processes and threads at once (RLIMIT_NPROC).
    """

    timeout_s: float = 5.0
    cpu_s: int = 6
    memory_mb: int = 1024
    file_mb: int = 16
    procs: int = 16


def run(files: Dict[str, str], steps: List[Dict[str, Any]], scratch_mb: int = 64, output_bytes: int = 4096,
        toolchain: Optional[str] = None) -> Dict[str, Any]:
    """Run `steps` (each {"argv", "env", "limits": Limits}) one after another in one jail holding `files`; a step
    that does not exit 0 ends the check. `{toolchain}` in argv and env is where `toolchain` appears inside."""
    fallback_dir = tempfile.mkdtemp(prefix="rtune-check-")  # used only where no mount namespace can be made
    spec = {"files": files, "scratch_mb": scratch_mb, "output_bytes": output_bytes, "toolchain": toolchain,
            "uid": UID_BASE + random.randrange(UID_SPAN), "fallback_dir": fallback_dir,
            "steps": [{"argv": step["argv"], "env": {**BASE_ENV, **step.get("env", {})},
                       **asdict(step.get("limits", Limits()))} for step in steps]}
    budget = sum(s["timeout_s"] for s in spec["steps"]) + 30
    try:
        done = subprocess.run([sys.executable, "-I", "-S", JAIL], input=json.dumps(spec), capture_output=True,
                              text=True, timeout=budget, env={"PATH": BASE_ENV["PATH"]})
    finally:
        shutil.rmtree(fallback_dir, ignore_errors=True)
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"the sandbox failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


@functools.cache
def rust_toolchain() -> str:
    """The Rust sysroot (bin/rustc and the standard library); UserError naming the fix where rustc is missing."""
    rustc = shutil.which("rustc") or os.path.expanduser("~/.cargo/bin/rustc")
    if not os.path.exists(rustc):
        raise UserError("rustc was not found: install the Rust toolchain (https://rustup.rs, or apt-get install "
                        "rustc) to check Rust code")
    found = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True)
    if found.returncode != 0:
        raise UserError(f"rustc --print sysroot failed: {found.stderr.strip()[:200]}")
    return found.stdout.strip()
