"""Checkpoints: complete ones load exactly, incomplete or tampered ones are never used."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from rtune import checkpoint as ckpt
from rtune.errors import UserError
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
    with pytest.raises(UserError, match="model.safetensors is missing or truncated"):
        ckpt.read_marker(out)
    os.remove(os.path.join(out, ckpt.MARKER))
    with pytest.raises(UserError, match="not a complete rtune checkpoint"):
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
    with pytest.raises(UserError, match="refusing"):
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


# ---- writes around the page cache (rtune.direct_io, put_directory) ------------------------------------------

def _fs_type(path: str) -> str:
    """The filesystem type of the mount holding path (Linux /proc/mounts)."""
    path, best = os.path.realpath(path), ("", "")
    with open("/proc/mounts") as f:
        for line in f:
            mount_point, fs_type = line.split()[1:3]
            inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) > len(best[0]):
                best = (mount_point, fs_type)
    return best[1]


def _resident_pages(path: str) -> int:
    """How many of a file's pages are in the page cache (mincore on a mapping that touches none of them)."""
    import ctypes
    import mmap

    size = os.path.getsize(path)
    libc = ctypes.CDLL(None, use_errno=True)
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    anchor = ctypes.c_char.from_buffer(mapping)
    try:
        pages = (ctypes.c_ubyte * (-(-size // mmap.PAGESIZE)))()
        assert libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), pages) == 0
        return sum(p & 1 for p in pages)
    finally:
        del anchor
        mapping.close()


needs_page_cache = pytest.mark.skipif(
    not os.path.exists("/proc/mounts") or _fs_type(os.environ.get("TMPDIR", "/tmp")) in ("tmpfs", ""),
    reason="page-cache residency: Linux, on a disk-backed temporary directory")


@needs_page_cache
def test_trainer_state_is_written_around_the_page_cache_and_loads_exactly(tmp_path, monkeypatch):
    from rtune import direct_io

    monkeypatch.setattr(direct_io, "CHUNK_BYTES", 64 * 1024)  # many full buffers, then a ragged tail
    monkeypatch.setattr(direct_io, "_buffer", None)
    state = {"exp_avg": torch.randn(100_003), "step": 7, "name": "adamw"}
    path = str(tmp_path / ckpt.STATE)
    with direct_io.direct_writer(path) as f:
        torch.save(state, f)
    assert f.direct, "O_DIRECT was refused on a disk-backed filesystem"
    assert _resident_pages(path) == 0  # before reading it back, which fills the cache
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["exp_avg"], state["exp_avg"]) and loaded["step"] == 7 and loaded["name"] == "adamw"
    torch.save(state, str(tmp_path / "buffered.pt"))  # the usual write: what the check above would see without it
    assert _resident_pages(str(tmp_path / "buffered.pt")) > 0


def test_a_filesystem_refusing_direct_writes_still_gets_the_whole_file(tmp_path, monkeypatch):
    """Some filesystems accept O_DIRECT at open and refuse the write (EINVAL): the rest goes the usual way."""
    import errno
    import fcntl
    import types

    from rtune import direct_io

    def refusing_write(fd, data):
        if getattr(os, "O_DIRECT", 0) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return os.write(fd, data)

    monkeypatch.setattr(direct_io, "os", types.SimpleNamespace(**{**vars(os), "write": refusing_write}))
    monkeypatch.setattr(direct_io, "CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(direct_io, "_buffer", None)
    state = {"exp_avg": torch.randn(50_001)}
    path = str(tmp_path / ckpt.STATE)
    with direct_io.direct_writer(path) as f:
        torch.save(state, f)
    assert not f.direct
    assert torch.equal(torch.load(path, weights_only=True)["exp_avg"], state["exp_avg"])


@needs_page_cache
def test_local_storage_takes_a_checkpoint_on_disk_and_out_of_the_page_cache(tmp_path):
    """A background upload to local storage moves files in: each is flushed, then dropped from the cache first."""
    import pyarrow.fs

    from rtune.worker.checkpointing import put_directory

    src = tmp_path / "local"
    (src / "fsdp_shards").mkdir(parents=True)
    for name in ("model.safetensors", "fsdp_shards/rank00000.safetensors"):
        (src / name).write_bytes(os.urandom(1 << 20))
        assert _resident_pages(str(src / name)) > 0  # just written: all in the cache
    put_directory(str(src), str(tmp_path / "storage"), pyarrow.fs.LocalFileSystem())
    for name in ("model.safetensors", "fsdp_shards/rank00000.safetensors"):
        assert _resident_pages(str(tmp_path / "storage" / name)) == 0
