"""The driver's resume preflight: intact checkpoints are found, damaged ones skipped, changes refused.

No Ray here: run directories are built with `checkpoint.save` from a tiny model, exactly as rank 0
writes them.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest
from torch.utils.data import DataLoader, DistributedSampler

from conftest import compose
from rtune import checkpoint as ckpt
from rtune.config import ConfigError, finalize, to_dict
from rtune.driver.launch import _resume_point
from rtune.worker.loop import BatchStream
from rtune.model import train_bpe_tokenizer


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = train_bpe_tokenizer(["fn main() {}"] * 20, 300, str(tmp_path_factory.mktemp("tok") / "bpe"))
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=16, n_positions=64))
    return model, tokenizer


def make_run(tmp_path, tiny_parts, steps, *overrides):
    cfg = finalize(compose(f"storage_path={tmp_path}", "run_name=r", "trainer.max_steps=20", *overrides))
    run_dir = os.path.join(cfg.storage_path, cfg.run_name)
    model, tokenizer = tiny_parts
    for step in steps:
        state = {"step": step, "optimizer": {}, "rng": [], "data": {"epoch": 0, "offset": step}}
        ckpt.save(os.path.join(run_dir, ckpt.dir_name(step)), model, tokenizer, state, to_dict(cfg), {})
    return cfg, run_dir


def test_resumes_from_the_newest_intact_checkpoint(tmp_path, tiny_parts, capsys):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [4, 8])
    assert _resume_point(cfg, run_dir).endswith(ckpt.dir_name(8))
    assert "resuming run r from" in capsys.readouterr().out
    assert _resume_point(cfg, str(tmp_path / "fresh")) is None


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "no_marker", "missing_file"])
def test_damaged_newest_checkpoint_is_skipped_and_kept(tmp_path, tiny_parts, capsys, damage):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [4, 8])
    newest = os.path.join(run_dir, ckpt.dir_name(8))
    weights = os.path.join(newest, "model.safetensors")
    if damage == "truncate":
        with open(weights, "r+b") as f:
            f.truncate(100)
    elif damage == "corrupt":  # same size, garbage header
        with open(weights, "r+b") as f:
            f.write(b"\xff" * 64)
    elif damage == "no_marker":
        os.remove(os.path.join(newest, ckpt.MARKER))
    else:
        os.remove(os.path.join(newest, "tokenizer.json"))
    assert _resume_point(cfg, run_dir).endswith(ckpt.dir_name(4))
    assert "warning: skipping" in capsys.readouterr().out
    assert os.path.isdir(newest)  # never deleted


def test_no_intact_checkpoint_is_an_error(tmp_path, tiny_parts):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [4])
    os.remove(os.path.join(run_dir, ckpt.dir_name(4), ckpt.MARKER))
    with pytest.raises(ckpt.CheckpointError, match="no intact checkpoint"):
        _resume_point(cfg, run_dir)


@pytest.mark.parametrize("change, key", [
    ("data.seq_len=128", "data.seq_len"),
    ("model.from_config.n_layer=2", "model.from_config"),
    ("model=gpt2", "model.name_or_path"),
])
def test_resume_with_changed_model_or_data_is_refused(tmp_path, tiny_parts, change, key):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [4])
    changed = finalize(compose(f"storage_path={tmp_path}", "run_name=r", "trainer.max_steps=20", change))
    with pytest.raises(ckpt.CheckpointError, match=f"trained with {key}=.*start a new run_name"):
        _resume_point(changed, run_dir)


def test_more_steps_and_other_worker_counts_may_resume(tmp_path, tiny_parts):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [4])
    longer = finalize(compose(f"storage_path={tmp_path}", "run_name=r", "trainer.max_steps=50", "num_workers=1"))
    assert _resume_point(longer, run_dir) is not None


def test_finished_run_says_how_to_continue(tmp_path, tiny_parts):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [20])
    with pytest.raises(ConfigError, match="already reached step 20.*trainer.max_steps above 20"):
        _resume_point(cfg, run_dir)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/rtune-pwned-preflight",))


def test_planted_pickle_is_refused_before_any_worker(tmp_path, tiny_parts):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [4])
    newest = os.path.join(run_dir, ckpt.dir_name(4))
    state = os.path.join(newest, ckpt.STATE)
    with open(state, "wb") as f:
        pickle.dump({"step": _Payload()}, f)
    with open(os.path.join(newest, ckpt.MARKER)) as f:
        marker = json.load(f)
    marker["files"][ckpt.STATE] = os.path.getsize(state)
    with open(os.path.join(newest, ckpt.MARKER), "w") as f:
        json.dump(marker, f)
    with pytest.raises(ckpt.CheckpointError, match="refusing"):
        _resume_point(cfg, run_dir)
    assert not os.path.exists("/tmp/rtune-pwned-preflight")


def test_batch_stream_resumes_at_the_exact_sample():
    """Stopped after 11 batches and resumed: the same batches, in the same order, over epochs."""
    data = list(range(40))

    def stream(**position):
        sampler = DistributedSampler(data, num_replicas=2, rank=1, shuffle=True, seed=3, drop_last=True)
        loader = DataLoader(data, batch_size=3, sampler=sampler, drop_last=True)
        return BatchStream(loader, sampler, **position)

    straight = stream()
    reference = [straight.next().tolist() for _ in range(25)]
    first = stream()
    head = [first.next().tolist() for _ in range(11)]
    resumed = stream(**first.state())
    tail = [resumed.next().tolist() for _ in range(14)]
    assert head + tail == reference
    per_epoch = 20 // 3
    epoch0 = sum(reference[:per_epoch], [])
    assert len(set(epoch0)) == len(epoch0)  # every sample of the shard at most once per epoch
    assert reference[:per_epoch] != reference[per_epoch:2 * per_epoch]  # reshuffled each epoch
