"""`scripts/bench.py --quick` runs every kind of system end to end (a smoke test: no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_quick_mode(tmp_path):
    out = tmp_path / "throughput.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["systems"]) == {"bare_default", "hf", "torchrun", "rtune1_default"}
    assert all(s["steady_tokens_per_s"] > 0 and s["time_to_first_step_s"] > 0 for s in report["systems"].values())
    assert report["ratios"]["defaults_rtune1_vs_bare"] > 0
    assert report["packing"]["rtune_packed_non_pad_fraction"] > 0.99
    assert (tmp_path / "throughput.png").stat().st_size > 1000
