"""The driver's resume preflight: intact checkpoints are found, damaged ones skipped, changes refused.

No Ray here: run directories are built with `checkpoint.save` from a tiny model, exactly as rank 0
writes them.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest
from conftest import compose

from rtune import checkpoint as ckpt
from rtune.config import to_dict
from rtune.driver.preflight import finalize, resume_point
from rtune.errors import UserError
from rtune.model import train_bpe_tokenizer
from rtune.worker.order import GlobalOrder


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
        state = {"step": step, "optimizer": {}, "data": {"epoch": 0, "position": 0, "blocks_seen": 0}}
        ckpt.save(os.path.join(run_dir, ckpt.dir_name(step)), model, tokenizer, state, to_dict(cfg), {})
    return cfg, run_dir


def test_resumes_from_the_newest_intact_checkpoint(tmp_path, tiny_parts, capsys):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [4, 8])
    assert resume_point(cfg, run_dir).endswith(ckpt.dir_name(8))
    assert "resuming run r from" in capsys.readouterr().out
    assert resume_point(cfg, str(tmp_path / "fresh")) is None


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
    assert resume_point(cfg, run_dir).endswith(ckpt.dir_name(4))
    assert "warning: skipping" in capsys.readouterr().out
    assert os.path.isdir(newest)  # never deleted


def test_no_intact_checkpoint_is_an_error(tmp_path, tiny_parts):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [4])
    os.remove(os.path.join(run_dir, ckpt.dir_name(4), ckpt.MARKER))
    with pytest.raises(UserError, match="no intact checkpoint"):
        resume_point(cfg, run_dir)


@pytest.mark.parametrize("change, key", [
    ("data.seq_len=128", "data.seq_len"),
    ("model.from_config.n_layer=2", "model.from_config"),
    ("model=gpt2", "model.name_or_path"),
])
def test_resume_with_changed_model_or_data_is_refused(tmp_path, tiny_parts, change, key):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [4])
    changed = finalize(compose(f"storage_path={tmp_path}", "run_name=r", "trainer.max_steps=20", change))
    with pytest.raises(UserError, match=f"trained with {key}=.*start a new run_name"):
        resume_point(changed, run_dir)


def test_more_steps_and_other_worker_counts_may_resume(tmp_path, tiny_parts):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [4])
    longer = finalize(compose(f"storage_path={tmp_path}", "run_name=r", "trainer.max_steps=50", "num_workers=1"))
    assert resume_point(longer, run_dir) is not None


def test_deepspeed_resume_needs_the_same_worker_count(tmp_path, tiny_parts):
    make_run(tmp_path, tiny_parts, [4], "strategy=deepspeed", "num_workers=2")
    fewer = finalize(compose(f"storage_path={tmp_path}", "run_name=r", "trainer.max_steps=20", "strategy=deepspeed",
                             "num_workers=1"))
    with pytest.raises(UserError, match="trained by 2 DeepSpeed workers, now 1.*num_workers=2"):
        resume_point(fewer, os.path.join(str(tmp_path), "r"))


def test_finished_run_says_how_to_continue(tmp_path, tiny_parts):
    cfg, run_dir = make_run(tmp_path, tiny_parts, [20])
    with pytest.raises(UserError, match="already reached step 20.*trainer.max_steps above 20"):
        resume_point(cfg, run_dir)


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
    with pytest.raises(UserError, match="refusing"):
        resume_point(cfg, run_dir)
    assert not os.path.exists("/tmp/rtune-pwned-preflight")


def test_global_order_resumes_at_the_same_row_with_any_worker_count():
    """Stopped after 7 steps of 2 workers, resumed with 1 then 4: the same rows in the same order as an
    uninterrupted run, each row at most once per epoch, a new shuffle each epoch."""
    n, seed, per_step, micro = 50, 3, 8, 2

    def trained(order, world_size, steps):
        out = []
        for _ in range(steps):
            shares = [order.__class__(**{**order_kwargs, **order.state()}).rank_micro_batches(r, world_size)
                      for r in range(world_size)]  # what each rank of this group takes at this step
            mine = order.rank_micro_batches(0, world_size)
            assert mine == shares[0]
            out.append([rows for share in shares for _, rows in share])
            assert [k for share in shares for k, _ in share] == list(range(per_step // micro))
        return out

    order_kwargs = dict(n_rows=n, seed=seed, rows_per_step=per_step, micro_batch_size=micro)
    straight = trained(GlobalOrder(**order_kwargs), 2, 20)
    first = GlobalOrder(**order_kwargs)
    head = trained(first, 2, 7)
    second = GlobalOrder(**order_kwargs, **first.state())
    middle = trained(second, 1, 5)
    tail = trained(GlobalOrder(**order_kwargs, **second.state()), 4, 8)
    assert head + middle + tail == straight
    per_epoch = n // per_step
    epoch0 = [row for step in straight[:per_epoch] for micro_batch in step for row in micro_batch]
    assert len(epoch0) == len(set(epoch0)) == per_epoch * per_step  # no row twice; the rest (2) dropped
    assert straight[:per_epoch] != straight[per_epoch:2 * per_epoch]  # reshuffled each epoch
    assert second.blocks_seen == 12 * per_step and second.epoch == 1


def test_checkpoints_from_before_the_global_order_resume_at_the_same_row_count():
    """Older checkpoints saved a per-rank batch offset and one RNG state per rank: the rows the group had
    consumed (offset x micro batch x workers) become the global position."""
    from rtune.worker.loop import data_position

    old = {"step": 5, "rng": [{}, {}], "data": {"epoch": 1, "offset": 5}}
    assert data_position(old, micro_batch_size=4) == {"epoch": 1, "position": 40, "blocks_seen": 40}
    new = {"step": 5, "data": {"epoch": 0, "position": 48, "blocks_seen": 240}}
    assert data_position(new, micro_batch_size=4) == new["data"]
