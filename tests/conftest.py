"""Shared fixtures: an isolated cache, offline hubs, composed configs, one local Ray for the session.

Tests never touch the network: the hub is switched off, and Ray binds its dashboard to 127.0.0.1.
"""

from __future__ import annotations

import os
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
    from rtune.cli import compose_config

    return compose_config(list(overrides))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for all integration tests (start-up costs ~10 s; each fit() reuses it)."""
    import ray

    from rtune.driver.launch import init_local_ray

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
