"""`scripts/bench/throughput.py --quick` runs every kind of system end to end (a smoke test: no timing asserts),
and writes under results/smoke/, never over the committed figures in results/benchmarks/."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(ROOT, "results", "benchmarks")
SMOKE = os.path.join(ROOT, "results", "smoke")


def _snapshot(folder: str) -> dict:
    """Every file under folder: its bytes' digest."""
    out = {}
    for d, _, names in os.walk(folder):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_benchmark_quick_mode():
    before = _snapshot(COMMITTED)
    assert {"throughput.json", "throughput.png"} <= set(before)
    out = os.path.join(SMOKE, "throughput.json")
    for path in (out, os.path.join(SMOKE, "throughput.png")):  # no figure of an earlier run passes for this one
        if os.path.exists(path):
            os.remove(path)
    # the default --out: the committed figure's path, which a quick run must not write
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench", "throughput.py"), "--quick"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _snapshot(COMMITTED) == before  # results/benchmarks/ untouched, byte for byte
    with open(out) as f:
        report = json.load(f)
    assert "QUICK smoke run" in report["what"]
    assert set(report["systems"]) == {"bare_default", "hf", "torchrun", "rtune1_default"}
    assert all(s["steady_tokens_per_s"] > 0 and s["time_to_first_step_s"] > 0 for s in report["systems"].values())
    assert report["ratios"]["defaults_rtune1_vs_bare"] > 0
    assert report["packing"]["rtune_packed_non_pad_fraction"] > 0.99
    assert set(report["machine"]) == {"cpu", "cores", "arch", "platform", "python", "torch", "gpu"}
    assert os.path.getsize(os.path.join(SMOKE, "throughput.png")) > 1000
