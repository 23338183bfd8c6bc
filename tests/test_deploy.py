"""Operator files that cannot run here (SLURM, KubeRay, Grafana) checked with what can run here,
and the pure helpers behind submit / multirun / tune."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import compose
from rtune.config import validate
from rtune.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SHELL_SCRIPTS = sorted([*ROOT.glob("scripts/**/*.sh"), ROOT / "scripts/cluster/slurm/rtune.sbatch", ROOT / ".ci/run"])


def _check_rtune_command(argv: list[str]) -> None:
    """argv is `python -m rtune train KEY=VALUE ...` and its overrides compose and validate."""
    assert argv[:4] == ["python", "-m", "rtune", "train"], argv
    cfg = compose(*argv[4:])
    validate(cfg)


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_scripts_pass_shellcheck(script):
    assert shutil.which("shellcheck"), "shellcheck is a dev dependency: pip install -e '.[dev]'"
    out = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_sbatch_default_run_is_a_valid_rtune_invocation():
    text = (ROOT / "scripts/cluster/slurm/rtune.sbatch").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts/cluster/slurm/rtune.sbatch")]).returncode == 0
    assert "#SBATCH --nodes=" in text and "srun" in text and "ray start --head" in text
    defaults = shlex.split(re.search(r"^RTUNE_DEFAULT_ARGS=\((.*)\)$", text, flags=re.M).group(1))
    # The script prepends num_workers (nodes x GPUs) and submits `python -m rtune submit -- train ...`.
    assert re.search(r'python -m rtune submit --address "\S+" -- train "\$\{args\[@\]\}"', text)
    _check_rtune_command(["python", "-m", "rtune", "train", "num_workers=16", *defaults])


def test_kuberay_rayjob_runs_a_valid_rtune_invocation_on_gpu_workers():
    manifest = yaml.safe_load((ROOT / "deploy/kuberay/rayjob.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    argv = shlex.split(spec["entrypoint"])
    _check_rtune_command(argv)
    workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    gpus = int(workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    cfg = compose(*argv[4:])
    assert cfg.use_gpu and cfg.num_workers <= workers["replicas"] * gpus  # the run fits the cluster it asks for
    assert cfg.storage_path.startswith("s3://")  # pods' own disks do not outlive them
    assert spec["shutdownAfterJobFinishes"] is True


def test_grafana_dashboard_plots_every_exported_metric():
    from rtune.telemetry import GAUGES, SERVE_METRICS

    dashboard = json.loads((ROOT / "deploy/grafana/rtune_dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for name, _, _ in GAUGES:
        assert any(f"ray_{name}{{" in e for e in exprs), f"no panel plots ray_{name}"
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    serving = {f"ray_{name}{suffix}" for name, kind, _ in SERVE_METRICS for suffix in suffixes[kind]}
    for name, _, _ in SERVE_METRICS:
        assert any(re.search(rf"ray_{name}(_total|_bucket)?{{", e) for e in exprs), f"no panel plots ray_{name}"
    exported = {f"ray_{name}" for name, _, _ in GAUGES} | serving
    for expr in exprs:
        assert set(re.findall(r"ray_rtune_\w+", expr)) <= exported, expr


# ---- pure helpers ----------------------------------------------------------------------------------

def test_sweep_names_are_stable_and_run_names_carry_only_the_swept_values():
    from rtune.config import RUN_NAME
    from rtune.driver.sweep import run_name_for, swept_keys, sweep_name_for

    args = ["-m", "optim.lr=1e-4,3e-4", "peft=none,lora", "trainer.max_steps=50", "storage_path=/x"]
    assert sweep_name_for(args) == sweep_name_for(list(reversed(args)))  # order does not matter
    assert sweep_name_for(args) == sweep_name_for([*args[:-1], "storage_path=/elsewhere"])  # placement does not
    assert sweep_name_for(args) != sweep_name_for([*args, "trainer.max_steps=60"])
    keys = swept_keys(args)
    assert keys == ["optim.lr", "peft"]
    name = run_name_for(["optim.lr=0.0003", "peft=lora", "trainer.max_steps=50"], keys=keys)
    assert name == "optim.lr=0.0003,peft=lora" and RUN_NAME.match(name)
    long = run_name_for([f"k{i}=" + "v" * 20 for i in range(10)])
    assert len(long) <= 96 and RUN_NAME.match(long)


def test_search_space_parsing_and_errors():
    from rtune.driver.search import apply_params, check_search, parse_distribution, trial_run_name

    assert parse_distribution("optim.lr", "loguniform(1e-5, 1e-3)") == ("loguniform", [1e-5, 1e-3])
    assert parse_distribution("peft.r", "choice(8,16)") == ("choice", [8, 16])
    assert parse_distribution("peft", "grid(none,lora)") == ("grid", ["none", "lora"])
    for bad in ("lognormal(1,2)", "loguniform(0,1)", "uniform(3,1)", "choice()", "0.1"):
        with pytest.raises(UserError, match="search.space"):
            parse_distribution("k", bad)
    base = compose()
    from rtune.config import to_dict

    assert apply_params(to_dict(base), {"optim.lr": 0.01, "peft.r": 4}).peft.r == 4
    with pytest.raises(UserError, match="not a config key"):
        apply_params(to_dict(base), {"optim.learning_rate": 0.01})
    with pytest.raises(UserError, match="refuses"):
        apply_params(to_dict(base), {"trainer.max_steps": "many"})
    with pytest.raises(UserError, match="needs a search space"):
        check_search(base)
    cfg = compose('search.space={optim.lr: "loguniform(1e-5,1e-3)", peft.r: "choice(8,16)"}')
    assert set(check_search(cfg)) == {"optim.lr", "peft.r"}
    assert trial_run_name(3, {"optim.lr": 0.000123456, "peft.r": 8}) == "trial003-optim.lr=0.000123,peft.r=8"


def test_submit_entrypoint_address_and_token(tmp_path, monkeypatch):
    from rtune.driver import submit

    assert submit.build_entrypoint(["train", "a=1"], "/abs/results") == [
        "python", "-m", "rtune", "train", "a=1", "storage_path=/abs/results"]
    assert submit.build_entrypoint(["train", "storage_path=s3://b/r"], "/abs/results")[-1] == "storage_path=s3://b/r"
    with pytest.raises(UserError, match="submit needs a command"):
        submit.build_entrypoint(["python", "x.py"], None)
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    assert submit.job_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.1:8265/")
    assert submit.job_address(None) == "http://10.0.0.1:8265"
    assert submit.job_address("127.0.0.1:9000") == "http://127.0.0.1:9000"
    token_file = tmp_path / "token"
    token_file.write_text("secret-token\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert submit.auth_headers() == {"Authorization": "Bearer secret-token"}
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert submit.auth_headers() == {}
    assert submit._last_error("x\nrtune: error: unknown config key 'a'\nWebSocket closed") == "unknown config key 'a'"
    assert os.path.basename(str(submit.project_root())) == ROOT.name
