"""Checkpoints: complete ones load exactly, incomplete or tampered ones are never used."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from rtune import checkpoint as ckpt
from rtune.model import train_bpe_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok_dir = str(tmp_path_factory.mktemp("tok") / "bpe")
    tokenizer = train_bpe_tokenizer(["fn main() { println!(\"hi\"); }"] * 50, 300, tok_dir)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=32, n_positions=32))
    return model, tokenizer


def _save(tmp_path, tiny, step=5, name=None):
    model, tokenizer = tiny
    out = str(tmp_path / (name or ckpt.dir_name(step)))
    opt = torch.optim.AdamW(model.parameters())
    state = {"step": step, "optimizer": opt.state_dict(), "rng": [{"torch": torch.get_rng_state()}],
             "data": {"epoch": 1, "offset": 3}}
    ckpt.save(out, model, tokenizer, state, {"seed": 1}, {"eval_loss": 1.0})
    return out


def test_checkpoint_is_a_loadable_hf_model_with_identical_logits(tmp_path, tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = tiny
    out = _save(tmp_path, tiny)
    assert os.path.exists(os.path.join(out, "model.safetensors"))
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([tokenizer("fn main() {")["input_ids"]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded.eval()(ids).logits)
    assert AutoTokenizer.from_pretrained(out)("fn main")["input_ids"] == tokenizer("fn main")["input_ids"]
    state = ckpt.load_trainer_state(out)
    assert state["step"] == 5 and state["data"] == {"epoch": 1, "offset": 3}


def test_truncated_or_missing_files_are_detected(tmp_path, tiny):
    out = _save(tmp_path, tiny)
    weights = os.path.join(out, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors is missing or truncated"):
        ckpt.read_marker(out)
    os.remove(os.path.join(out, ckpt.MARKER))
    with pytest.raises(ckpt.CheckpointError, match="not a complete rtune checkpoint"):
        ckpt.read_marker(out)


def test_find_latest_skips_half_written_checkpoints(tmp_path, tiny):
    _save(tmp_path, tiny, step=3)
    newest = _save(tmp_path, tiny, step=6)
    assert ckpt.find_latest(str(tmp_path)) == newest
    os.remove(os.path.join(newest, ckpt.MARKER))  # a crash before the marker landed
    assert ckpt.find_latest(str(tmp_path)) == str(tmp_path / ckpt.dir_name(3))
    assert ckpt.choose_resume_dir(str(tmp_path / ckpt.dir_name(3)), str(tmp_path)) == str(tmp_path / ckpt.dir_name(3))


def test_storage_checkpoint_newer_than_rays_wins(tmp_path, tiny):
    older = _save(tmp_path, tiny, step=3)
    newer = _save(tmp_path, tiny, step=6)
    assert ckpt.choose_resume_dir(older, str(tmp_path)) == newer
    assert ckpt.choose_resume_dir(None, str(tmp_path / "nothing-here")) is None


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/rtune-pwned",))


def test_pickled_code_in_trainer_state_is_refused_not_run(tmp_path, tiny):
    out = _save(tmp_path, tiny)
    state_path = os.path.join(out, ckpt.STATE)
    with open(state_path, "wb") as f:
        pickle.dump({"step": _Payload()}, f)
    marker = ckpt.read_marker.__globals__["json"].load(open(os.path.join(out, ckpt.MARKER)))
    marker["files"][ckpt.STATE] = os.path.getsize(state_path)  # a consistent, tampered checkpoint
    ckpt.read_marker.__globals__["json"].dump(marker, open(os.path.join(out, ckpt.MARKER), "w"))
    if os.path.exists("/tmp/rtune-pwned"):
        os.remove("/tmp/rtune-pwned")
    with pytest.raises(ckpt.CheckpointError, match="refusing"):
        ckpt.load_trainer_state(out)
    assert not os.path.exists("/tmp/rtune-pwned")


def test_background_checkpoint_copy_is_independent_and_keeps_tied_weights_one():
    """What an async checkpoint writes is a copy taken at the step: training on does not change it, and
    GPT-2's tied embedding / output head stay one tensor (written once, as save_pretrained would)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rtune.worker.strategy import _cpu_copy

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2,
                                                                  vocab_size=50))
    copied = _cpu_copy(model.state_dict())
    assert copied["lm_head.weight"] is copied["transformer.wte.weight"]
    before = copied["transformer.h.0.attn.c_attn.weight"].clone()
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight.add_(1.0)
    assert torch.equal(copied["transformer.h.0.attn.c_attn.weight"], before)


def test_background_checkpoint_reuses_its_buffers_and_refills_them_with_the_new_state():
    """The second checkpoint's copy goes into the first one's CPU buffers (no fresh allocation), holds the
    weights of its own step, and keeps tied weights one tensor."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rtune.worker.strategy import _cpu_copy

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2,
                                                                  vocab_size=50))
    staging: dict = {}
    first = _cpu_copy(model.state_dict(), staging=staging)
    key = "transformer.h.0.attn.c_attn.weight"
    buffer = first[key]
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight.add_(1.0)
    second = _cpu_copy(model.state_dict(), staging=staging)
    assert second[key] is buffer  # the same memory, refilled
    assert torch.equal(second[key], model.state_dict()[key])  # this step's weights, not the first step's
    assert second["lm_head.weight"] is second["transformer.wte.weight"]



def _put_at_once(start, src, dest, fs, errors) -> None:
    from rtune.worker.checkpointing import put_directory

    start.wait()
    try:
        put_directory(str(src), str(dest), fs)
    except Exception as err:  # noqa: BLE001 - collected, asserted by the test
        errors.append(err)


def test_ranks_putting_their_parts_into_one_storage_folder_at_once_lose_nothing(tmp_path):
    """Local storage takes a checkpoint by rename. Sharded FSDP ranks each put their own fsdp_shards/ folder
    into the same checkpoint at the same moment; renaming a whole folder onto the one another rank just
    created fails, and that rank's upload dies without its marker (a run that resumed from step 0 in CI)."""
    import threading

    import pyarrow.fs

    from rtune.worker.checkpointing import put_directory

    ranks, fs = 2, pyarrow.fs.LocalFileSystem()
    for attempt in range(300):
        dest = tmp_path / f"checkpoint_{attempt}"
        sources = []
        for rank in range(ranks):
            src = tmp_path / f"rank{rank}_{attempt}"
            (src / "fsdp_shards").mkdir(parents=True)
            (src / "fsdp_shards" / f"rank{rank}.safetensors").write_bytes(b"x" * (rank + 1))
            (src / f"only_rank{rank}.json").write_text("{}")
            sources.append(src)
        start, errors = threading.Barrier(ranks), []
        threads = [threading.Thread(target=_put_at_once, args=(start, src, dest, fs, errors)) for src in sources]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sorted(os.listdir(dest / "fsdp_shards")) == [f"rank{r}.safetensors" for r in range(ranks)]
        assert sorted(os.listdir(dest)) == ["fsdp_shards"] + [f"only_rank{r}.json" for r in range(ranks)]
    # a retried upload replaces what an earlier attempt left
    (tmp_path / "retry" / "fsdp_shards").mkdir(parents=True)
    (tmp_path / "retry" / "fsdp_shards" / "rank0.safetensors").write_bytes(b"new")
    put_directory(str(tmp_path / "retry"), str(dest), fs)
    assert (dest / "fsdp_shards" / "rank0.safetensors").read_bytes() == b"new"
