"""Shared fixtures: an isolated cache, offline hubs, composed configs, one local Ray for the session.

Tests never touch the network: the hub is switched off, and Ray binds its dashboard to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

# Set before rtune/transformers/datasets are imported anywhere in the session.
_SESSION_TMP = tempfile.mkdtemp(prefix="rtune-tests-")
os.environ.setdefault("RTUNE_CACHE_DIR", os.path.join(_SESSION_TMP, "cache"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"


def compose(*overrides: str):
    """The typed config for these overrides, exactly as `python -m rtune train` composes it."""
    from rtune.compose import compose_config

    return compose_config(list(overrides))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for all integration tests (start-up costs ~10 s; each fit() reuses it)."""
    import ray

    from rtune.driver.cluster import init_local_ray

    # Ray's workers import the tests' own reward functions (tests/rl_rewards.py) by name, as a user's would be
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)
    init_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def tiny_overrides(tmp_path, run_name: str, *extra: str) -> list[str]:
    """A small, fast training run on the bundled corpus (a 2-layer model, short blocks)."""
    return [
        f"storage_path={tmp_path}", f"run_name={run_name}",
        "model.from_config.n_layer=2", "model.from_config.n_embd=64", "model.from_config.n_head=2",
        "data.seq_len=64", "trainer.micro_batch_size=4", "trainer.log_every_steps=1",
        "optim.warmup_steps=2", *extra,
    ]


def run_with_fault(tmp_path, name, *extra, min_drop=0.3, base=None, steps=8, fail_at=4):
    """A 2-worker run of `steps` steps whose rank 1 is SIGKILLed after step `fail_at`'s checkpoint and
    recovered by Ray.

    Checks: every step logged once, the run resumed exactly at step fail_at, the eval loss fell by min_drop.
    base: the overrides that pick the model and data (default: the tiny GPT-2 of tiny_overrides).
    """
    from rtune.driver.launch import train
    from rtune.metrics import read_metrics

    common = ("num_workers=2", f"trainer.max_steps={steps}", f"trainer.checkpoint_every_steps={fail_at}",
              f"trainer.eval_every_steps={fail_at}", "optim.lr=3e-3", f"debug.fail_at_step={fail_at}", "debug.fail_rank=1",
              "trainer.max_failures=1")
    if base is None:
        overrides = tiny_overrides(tmp_path, name, *common, *extra)
    else:
        overrides = [f"storage_path={tmp_path}", f"run_name={name}", "trainer.log_every_steps=1",
                     "optim.warmup_steps=2", *base, *common, *extra]
    cfg = compose(*overrides)
    summary = train(cfg)
    assert summary["final_step"] == steps
    run_dir = summary["run_dir"]
    logged = [r["step"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if "loss" in r]
    assert logged == list(range(1, steps + 1))
    events = [json.loads(line) for line in open(os.path.join(run_dir, "events.jsonl"))]
    assert [e["step"] for e in events] == [0, fail_at]  # started fresh, then resumed exactly at the checkpoint
    assert summary["eval_loss"] < summary["initial_eval_loss"] - min_drop, summary
    return cfg, summary


def eval_loss_of(model, cfg):
    """The eval loss of `model` on cfg's validation rows, computed as the workers compute it."""
    import torch

    from rtune.data.pipeline import prepare_data
    from rtune.data.rows import PackedRows
    from rtune.worker.lm import TokenLogprobs
    from rtune.worker.loop import evaluate

    prepared, tokenizer = prepare_data(cfg)
    val = PackedRows(prepared.val_path, tokenizer.pad_token_id)
    return evaluate(TokenLogprobs(model), val, cfg.trainer.micro_batch_size, None, 0, 1, torch.device("cpu"),
                    torch.autocast("cpu", enabled=False))["eval_loss"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "rtune", *args], capture_output=True, text=True, timeout=300)
