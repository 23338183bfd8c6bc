"""Every file in conf/ composes into the typed schema and passes validation; bad values are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import compose

from rtune.config import RTuneConfig, from_dict, to_dict, validate
from rtune.driver.preflight import default_run_name, finalize
from rtune.errors import UserError

CONF = Path(__file__).resolve().parents[1] / "conf"


# Options that only make sense together: a preference objective needs preference pairs, and back; online RL needs
# prompts and a reward, and back.
PARTNERS = {"objective=dpo": ("data=rust_preference",), "objective=orpo": ("data=rust_preference",),
            "objective=simpo": ("data=rust_preference",), "data=rust_preference": ("objective=dpo",),
            "objective=grpo": ("data=arith_prompts", "rewards=[exact_match]"),
            "data=arith_prompts": ("objective=grpo", "rewards=[exact_match]"),
            "data=rust_eval_prompts": ("objective=grpo", "rewards=[rust_tests]")}


def _group_options():
    for group_dir in sorted(p for p in CONF.iterdir() if p.is_dir() and p.name != "experiment"):
        for yaml in sorted(group_dir.glob("*.yaml")):
            yield f"{group_dir.name}={yaml.stem}"
    for yaml in sorted((CONF / "experiment").glob("*.yaml")):
        yield f"+experiment={yaml.stem}"


@pytest.mark.parametrize("override", list(_group_options()))
def test_every_config_file_composes_and_validates(override):
    cfg = compose(override, *PARTNERS.get(override, ()))
    assert isinstance(cfg, RTuneConfig)
    validate(cfg)


def test_defaults_are_the_offline_run():
    cfg = compose()
    assert cfg.model.name_or_path is None and cfg.model.from_config["model_type"] == "gpt2"
    assert cfg.data.path == "package:rust_sample" and cfg.data.text_field == "content"
    assert cfg.num_workers == 2 and cfg.use_gpu is False and cfg.storage_path == "results"


def test_overrides_reach_typed_fields():
    cfg = compose("optim.lr=3e-4", "trainer.max_steps=7", "num_workers=1", "data.seq_len=128")
    assert (cfg.optim.lr, cfg.trainer.max_steps, cfg.num_workers, cfg.data.seq_len) == (3e-4, 7, 1, 128)


def test_experiment_sets_hub_model_and_data():
    cfg = compose("+experiment=gpt2_rust")
    assert cfg.model.name_or_path == "gpt2" and cfg.data.path == "bigcode/the-stack-smol"
    assert cfg.data.data_dir == "data/rust" and cfg.trainer.precision == "bf16"


@pytest.mark.parametrize("override, message", [
    ("num_workers=0", "num_workers must be at least 1"),
    ("trainer.micro_batch_size=0", "trainer.micro_batch_size must be at least 1"),
    ("trainer.precision=fp8", "trainer.precision must be one of"),
    ("optim.schedule=step", "optim.schedule must be one of"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("run_name=a/b", "run_name"),
    ("tracking.backends=[tensorboard,comet]", "tracking.backends must be a list of distinct trackers"),
    ("tracking.wandb_mode=dryrun", "tracking.wandb_mode must be online or offline"),
])
def test_validate_names_the_fix(override, message):
    with pytest.raises(UserError, match=message):
        validate(compose(override))


def test_dict_round_trip_is_exact():
    cfg = compose("optim.lr=2e-4", "trainer.eval_max_batches=3")
    assert from_dict(to_dict(cfg)) == cfg


def test_finalize_makes_paths_absolute_and_names_unique(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = finalize(compose("storage_path=runs"))
    assert cfg.storage_path == os.path.join(str(tmp_path), "runs")
    assert os.path.isabs(cfg.data.cache_dir)
    assert default_run_name(cfg) != default_run_name(cfg)  # a plain re-run never resumes by accident


def test_configuration_reference_is_current():
    """docs/configuration.md is generated from the schema; regenerate it with `python -m rtune docs --write`."""
    from rtune.docs import render

    assert (CONF.parent / "docs" / "configuration.md").read_text() == render()


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_cpus_per_worker_auto_divides_the_cores_among_the_workers(workers, monkeypatch):
    import ray

    from rtune.driver.resources import resolve_cpus_per_worker

    if ray.is_initialized():  # an earlier test's cluster: auto then reads what its nodes offer
        offered = int(sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")))
    else:
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        offered = 8
    cfg = compose(f"num_workers={workers}")
    assert cfg.cpus_per_worker == "auto"
    resolve_cpus_per_worker(cfg)
    assert cfg.cpus_per_worker == max(1, offered // workers)
    fixed = compose(f"num_workers={workers}", "cpus_per_worker=3")
    resolve_cpus_per_worker(fixed)
    assert fixed.cpus_per_worker == 3


@pytest.mark.parametrize("value", ["0", "many", "1.5"])
def test_cpus_per_worker_must_be_whole_cores_or_auto(value):
    with pytest.raises(UserError, match="cpus_per_worker must be a whole number of cores"):
        validate(compose(f"cpus_per_worker={value}"))
