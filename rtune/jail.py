"""The sandbox's inside: a fresh, single-threaded interpreter (`python -I -S jail.py`, stdlib only) that isolates
itself, then runs the steps of one check (compile, run) as an unprivileged user, and prints their outcome as JSON.

Started by `sandbox.py`, never imported by rtune. Reads a spec on stdin:

    {"files": {name: text}, "steps": [{"argv", "env", "timeout_s", "cpu_s", "memory_mb", "file_mb", "procs"}],
     "toolchain": dir or null, "scratch_mb": int, "uid": int, "output_bytes": int}

Isolation, as far as the machine allows (the level is reported with the result):

    namespaces   (root) new mount, network and PID namespaces; private tmpfs over /tmp, /var/tmp, /dev/shm
                 (the check's whole writable world, `scratch_mb` each); steps run as `uid`, a user id of their
                 own, so RLIMIT_NPROC binds per check; the toolchain is bind-mounted read-only at /tmp/toolchain
    userns       (not root, user namespaces allowed) the same namespaces inside a user namespace; steps run as
                 the calling user, whose process count RLIMIT_NPROC then caps (what it has now + `procs`)
    rlimits      neither: resource limits, a scrubbed environment and a new session, no network isolation

Each step runs under a reaper that is PID 1 of the check's PID namespace: when the step ends, times out or is
killed, the reaper exits and the kernel kills every process left in the namespace (a fork bomb's too).
"""

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")  # the world-writable places a check could fill
MB = 1024 * 1024

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
    _check(libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                      data.encode() if data else None), f"mount {target}")


def _isolate(spec: dict) -> str:
    """Enter new namespaces and mount the private scratch; returns the isolation level reached."""
    root = os.geteuid() == 0
    try:
        if root:
            _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
        else:
            uid, gid = os.geteuid(), os.getegid()
            _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
    except (OSError, AttributeError):  # not allowed here, or not Linux (no unshare at all)
        return "rlimits"
    _mount("none", "/", "", MS_REC | MS_PRIVATE)
    toolchain = spec.get("toolchain")
    for path in WRITABLE:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec['scratch_mb']}m,mode=1777")
    if toolchain:  # readable by the check's user, which may not see the real path (e.g. under /root)
        os.mkdir("/tmp/toolchain")
        _mount(toolchain, "/tmp/toolchain", "", MS_BIND | MS_REC)
        _mount("none", "/tmp/toolchain", "", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)
    return "namespaces" if root else "userns"


def _limits(step: dict, level: str, uid: int) -> None:
    """In the step's process, before exec: resource limits, then (root) the check's own user."""
    procs = step["procs"]
    if level != "namespaces":  # the calling user's processes count too: allow what runs now, plus the step's
        procs += _processes_of(os.getuid())
    for name, value in ((resource.RLIMIT_CPU, step["cpu_s"]), (resource.RLIMIT_AS, step["memory_mb"] * MB),
                        (resource.RLIMIT_FSIZE, step["file_mb"] * MB), (resource.RLIMIT_NPROC, procs),
                        (resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(name, (value, value))
    if level == "namespaces":
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def _processes_of(uid: int) -> int:
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                count += os.stat(f"/proc/{pid}").st_uid == uid
            except OSError:
                pass
    return count


def _start_step(step: dict, index: int, level: str, uid: int, workdir: str) -> int:
    """Fork the step's process: its output to files, limits, (root) its own user, then exec."""
    child = os.fork()
    if child:
        return child
    try:
        for fd, name in ((1, f".stdout-{index}"), (2, f".stderr-{index}")):
            target = os.open(os.path.join(workdir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            os.dup2(target, fd)
            os.close(target)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.closerange(3, 65536)
        os.chdir(workdir)
        _limits(step, level, uid)
        os.execve(step["argv"][0], step["argv"], step["env"])
    finally:
        os._exit(127)


def _init(steps: list, level: str, uid: int, workdir: str, report_w: int) -> None:
    """The reaper, PID 1 of the check's PID namespace: runs the steps one by one, reports each status, and after
    each kills whatever the step left behind (kill(-1) from PID 1 reaches every process of the namespace)."""
    try:
        if hasattr(libc, "prctl"):  # Linux: dies with the jail, and with it the whole namespace
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if level == "rlimits":
            os.setsid()
        for index, step in enumerate(steps):
            started = time.monotonic()
            _, status = os.waitpid(_start_step(step, index, level, uid, workdir), 0)
            seconds = time.monotonic() - started
            try:
                os.kill(-1, signal.SIGKILL) if level != "rlimits" else os.killpg(0, signal.SIGKILL)
            except OSError:
                pass
            os.write(report_w, (json.dumps({"status": status, "seconds": seconds}) + "\n").encode())
            if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                break
    except BaseException as err:  # noqa: BLE001 - anything here is the sandbox's own failure
        os.write(report_w, (json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n").encode())
    finally:
        os._exit(0)


def _run_steps(steps: list, level: str, uid: int, workdir: str, output_bytes: int) -> list:
    """Run the steps under one reaper; a step past its wall-clock limit kills the reaper and with it everything."""
    report_r, report_w = os.pipe()
    reaper = os.fork()
    if reaper == 0:
        os.close(report_r)
        _init(steps, level, uid, workdir, report_w)
    os.close(report_w)
    results, pending = [], b""
    for index, step in enumerate(steps):
        started = time.monotonic()
        deadline = started + step["timeout_s"]
        report = None
        while report is None:
            if b"\n" in pending:  # the reaper may have reported more than one step in one read
                line, pending = pending.split(b"\n", 1)
                report = json.loads(line)
                break
            ready, _, _ = select.select([report_r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(report_r, 65536)
            if not chunk:
                break
            pending += chunk
        result = {"seconds": round(time.monotonic() - started, 3), "timed_out": report is None}
        if report is None:
            _kill(reaper, level)
        elif "error" in report:
            result["error"] = report["error"]
        else:
            status, result["seconds"] = report["status"], round(report["seconds"], 3)
            if os.WIFEXITED(status):
                result["exit_code"] = os.WEXITSTATUS(status)
            elif os.WIFSIGNALED(status):
                result["signal"] = os.WTERMSIG(status)
        for key, name in (("stdout", f".stdout-{index}"), ("stderr", f".stderr-{index}")):
            try:
                with open(os.path.join(workdir, name), "rb") as f:
                    result[key] = f.read(output_bytes).decode("utf-8", "replace")
            except OSError:
                result[key] = ""
        results.append(result)
        if result.get("exit_code") != 0:  # a failed compile is not run
            break
    _kill(reaper, level)
    os.close(report_r)
    return results


def _kill(reaper: int, level: str) -> None:
    try:
        if level == "rlimits":
            os.killpg(reaper, signal.SIGKILL)
        os.kill(reaper, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(reaper, 0)
    except ChildProcessError:
        pass


def main() -> None:
    spec = json.loads(sys.stdin.read())
    uid = spec["uid"]
    level = _isolate(spec)
    workdir = os.path.join("/tmp" if level != "rlimits" else spec["fallback_dir"], "check")
    os.makedirs(workdir, exist_ok=True)
    for name, text in spec["files"].items():
        with open(os.path.join(workdir, name), "w") as f:
            f.write(text)
    if level == "namespaces":
        for entry in [workdir] + [os.path.join(workdir, name) for name in spec["files"]]:
            os.chown(entry, uid, uid)
    toolchain = "/tmp/toolchain" if level != "rlimits" else spec.get("toolchain") or ""
    steps = [{**step, "argv": [a.replace("{toolchain}", toolchain) for a in step["argv"]],
              "env": {k: v.replace("{toolchain}", toolchain) for k, v in step["env"].items()}}
             for step in spec["steps"]]
    results = _run_steps(steps, level, uid, workdir, spec.get("output_bytes", 4096))
    sys.stdout.write(json.dumps({"isolation": level, "steps": results}))


if __name__ == "__main__":
    main()
