"""Generated code runs only in the sandbox: what a hostile or broken program can do there, and what it costs it.

Each program below is checked as `rtune eval` checks a completion (`rustc --test`, then the tests, in the jail);
each is scored 0 within its limits, leaves no process behind, and the checking process goes on. Needs rustc.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from rtune.sandbox import UID_BASE, UID_SPAN
from rtune.verifiers import check_one, check_rust

pytestmark = pytest.mark.skipif(shutil.which("rustc") is None and not os.path.exists(os.path.expanduser(
    "~/.cargo/bin/rustc")), reason="rustc is not installed: these tests check Rust code in the sandbox")

TESTS = "\n#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn t() { assert_eq!(go(), 1); }\n}\n"
SECRET = "hf_not_a_real_token_3141592653"


def _check(body: str, timeout_s: float = 2.0):
    started = time.perf_counter()
    result = check_rust(body + TESTS, run_tests=True, timeout_s=timeout_s)
    return result, time.perf_counter() - started


def _leftovers():
    """Processes of the sandbox's users still alive."""
    out = subprocess.run(["ps", "-eo", "uid=,pid=,comm="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if UID_BASE <= int(line.split()[0]) < UID_BASE + UID_SPAN]


def test_a_program_that_passes_and_one_that_fails_or_does_not_compile():
    assert _check("pub fn go() -> i32 { 1 }")[0].status == "passed"
    failed = _check("pub fn go() -> i32 { 2 }")[0]
    assert failed.status == "failed" and failed.score == 0 and "assertion" in failed.detail
    wrong = _check('pub fn go() -> i32 { "one" }')[0]
    assert wrong.status == "compile_error" and "mismatched types" in wrong.detail


def test_an_endless_loop_is_stopped_at_its_time_limit():
    result, took = _check("pub fn go() -> i32 { let mut x = 0u64; loop { x = x.wrapping_add(1); "
                          "if x == 0 { return 1; } } }", timeout_s=1.5)
    assert result.status == "timeout" and result.score == 0
    assert took < 10, took
    assert _leftovers() == []


def test_a_fork_bomb_hits_the_process_limit_and_nothing_survives_it():
    result, took = _check('pub fn go() -> i32 { let me = std::env::current_exe().unwrap(); let mut kids = Vec::new(); '
                          'loop { if let Ok(c) = std::process::Command::new(&me).spawn() { kids.push(c); } } }',
                          timeout_s=1.5)
    assert result.status in ("timeout", "sandbox_killed", "failed") and result.score == 0
    assert took < 15, took
    assert _leftovers() == []


def test_a_program_filling_the_disk_is_cut_off():
    """It writes 4 MB files into /tmp (up to 800 MB): they land on a private tmpfs of 64 MB, gone with the check."""
    probe = "rtune-sandbox-probe"
    before = shutil.disk_usage("/tmp").free
    result, _ = _check('use std::io::Write;\npub fn go() -> i32 { let buf = vec![7u8; 4 << 20]; for i in 0..200 { '
                       f'let mut f = std::fs::File::create(format!("/tmp/{probe}-{{}}", i)).unwrap(); '
                       'f.write_all(&buf).unwrap(); } 1 }')
    assert result.status in ("failed", "sandbox_killed") and result.score == 0
    assert not [name for name in os.listdir("/tmp") if name.startswith(probe)]
    assert before - shutil.disk_usage("/tmp").free < 64 * 2**20


def test_the_callers_secrets_never_reach_a_check(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    result, _ = _check('pub fn go() -> i32 { let t = std::env::var("HF_TOKEN").unwrap(); println!("{}", t); 1 }')
    assert result.status == "failed" and SECRET not in result.detail
    # nor can it read the caller's files (root's home here), at compile time or at run time
    home = os.path.expanduser("~")
    compiled = _check(f'pub fn go() -> i32 {{ include_str!("{home}/.bashrc").len() as i32 }}')[0]
    assert compiled.status == "compile_error" and "Permission denied" in compiled.detail
    read = _check(f'pub fn go() -> i32 {{ std::fs::read_dir("{home}").map(|_| 1).unwrap_or(0) }}')[0]
    assert read.status == "failed"


def test_a_socket_reaches_nothing():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        result, _ = _check(f'pub fn go() -> i32 {{ std::net::TcpStream::connect("127.0.0.1:{port}").map(|_| 1)'
                           '.unwrap_or(0) }')
        assert result.status == "failed"
        with pytest.raises(socket.timeout):
            server.accept()  # nothing ever connected


def test_memory_beyond_the_limit_is_refused():
    result, _ = _check("pub fn go() -> i32 { let v = vec![1u8; 8 << 30]; v[100] as i32 }")
    assert result.status == "sandbox_killed" and result.score == 0


def test_user_verifiers_that_raise_or_return_nan_score_zero(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("import math\n"
                                            "def boom(prompt, completion, **columns):\n    raise ValueError('no')\n"
                                            "def nan(prompt, completion, **columns):\n    return math.nan\n"
                                            "def half(prompt, completion, answer, **columns):\n"
                                            "    return 0.5 if answer in completion else 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    record = {"prompt": "2 + 2 =", "answer": "4", "pattern": r"\b4\b"}
    assert check_one("my_rewards:boom", record, " 4").to_dict()["status"] == "failed"
    assert check_one("my_rewards:nan", record, " 4").score == 0.0
    assert check_one("my_rewards:half", record, " 4").score == 0.5
    assert check_one("exact_match", record, "  4 ").score == 1.0 and check_one("exact_match", record, "5").score == 0
    assert check_one("regex", record, "it is 4.").score == 1.0 and check_one("regex", record, "44").score == 0.0
