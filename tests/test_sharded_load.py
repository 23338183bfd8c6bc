"""Sharded loading (rtune/model_init.py): a model built on the meta device, sharded with FSDP2 over 2 ranks (gloo),
then given each rank's slices, has the logits of the plainly built model, bit for bit: from config (transformers'
initialisation replayed module by module) and from a directory of safetensors, with and without LoRA, for GPT-2
(tied head, Conv1D) and Llama. And a rank's resident memory never grows by the whole model while it loads (built whole
and then sharded, it grows by about all of it)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import transformers

from conftest import compose

SHAPES = {"llama": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=128, vocab_size=300),
          "gpt2": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=64)}


def _rank(rank: int, port: int, kind: str, weights_dir: str, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from rtune.model import apply_lora
    from rtune.model_init import init_from_config, loadable_on_meta, materialize

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    peft = compose("peft=lora", "peft.target_modules=all-linear").peft
    config = transformers.AutoConfig.for_model(kind, **SHAPES[kind])
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    results = {}
    for source in (None, weights_dir):
        for lora in (False, True):
            torch.manual_seed(7)
            plain = init_from_config(config) if source is None else \
                transformers.AutoModelForCausalLM.from_pretrained(source, dtype="float32")
            plain = apply_lora(plain, peft) if lora else plain
            torch.manual_seed(7)
            with torch.device("meta"):
                skeleton = transformers.AutoModelForCausalLM.from_config(config)
            skeleton.rtune_weights_dir = source
            assert loadable_on_meta(skeleton, 300)
            model = apply_lora(skeleton, peft) if lora else skeleton
            base = model.get_base_model() if lora else model
            mesh = init_device_mesh("cpu", (2,))
            for module in base.modules():
                if type(module).__name__ in base._no_split_modules:
                    fully_shard(module, mesh=mesh)
            fully_shard(model, mesh=mesh)
            materialize(model, model, torch.device("cpu"), source, lora, seed=7)
            local = sum(p.to_local().numel() for p in model.parameters())
            plain.eval(), model.eval()
            with torch.no_grad():
                diff = (plain(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item()
            results[f"{'files' if source else 'config'}-{'lora' if lora else 'full'}"] = (
                diff, local, sum(p.numel() for p in plain.parameters()))
    if kind == "llama":  # the memory probe: a ~102M-parameter model (408 MB in fp32), built both ways
        big = transformers.AutoConfig.for_model("llama", hidden_size=512, intermediate_size=1536, num_hidden_layers=32,
                                                num_attention_heads=8, num_key_value_heads=4, vocab_size=4096)
        results["memory"] = {"sharded": _grown(lambda: _sharded(big)), "whole": _grown(lambda: _whole(big)),
                             "model_mb": _params(big) * 4 / 2 ** 20}
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def _params(config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in transformers.AutoModelForCausalLM.from_config(config).parameters())


def _grown(build) -> float:
    """How much this process's resident set grows at its peak while `build` runs (MB)."""
    import ctypes
    import gc

    from rtune.memory import peak_rss_mb, reset_peak_rss, rss_mb

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what an earlier build freed goes back to the OS: not reused unseen
    before = rss_mb()
    reset_peak_rss()
    model = build()
    grown = peak_rss_mb() - before
    del model
    gc.collect()
    return grown


def _shard(model):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (2,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _sharded(config):
    from rtune.model_init import materialize

    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    _shard(model)
    materialize(model, model, torch.device("cpu"), None, False, seed=0)
    return model


def _whole(config):  # strategy.fsdp_load=whole: built whole on every rank, then sharded
    from rtune.model_init import init_from_config

    return _shard(init_from_config(config))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_sharded_loading_gives_the_plain_models_logits(kind, tmp_path):
    weights_dir = str(tmp_path / "model")
    torch.manual_seed(1)
    transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(kind, **SHAPES[kind])).save_pretrained(weights_dir)
    out = str(tmp_path / "results.pt")
    mp.spawn(_rank, args=(_free_port(), kind, weights_dir, out), nprocs=2)
    results = torch.load(out, weights_only=True)
    memory = results.pop("memory", None)
    assert set(results) == {"config-full", "config-lora", "files-full", "files-lora"}
    for case, (diff, local, whole) in results.items():
        assert diff <= 1e-5, f"{kind} {case}: logits differ by {diff}"
        assert local < 0.6 * whole, f"{kind} {case}: rank 0 holds {local} of {whole} parameters"
    if memory is not None:  # never the whole model resident on a rank while it loads; built whole: about all of it
        assert memory["sharded"] < 0.75 * memory["model_mb"], memory
        assert memory["whole"] > 0.95 * memory["model_mb"], memory
        print(f"resident growth while loading, rank 0: {memory}")


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_a_model_built_from_config_is_saved_without_ever_being_whole(kind, tmp_path):
    """save_initialised (QLoRA's from-config base): the weights init_from_config gives, bit for bit, tied head
    included, written a tensor at a time; the process grows by a shard file and a block, not by the model."""
    from rtune.model_init import init_from_config, save_initialised

    config = transformers.AutoConfig.for_model(kind, **SHAPES[kind])
    torch.manual_seed(5)
    plain = init_from_config(config).state_dict()
    torch.manual_seed(5)
    save_initialised(config, str(tmp_path / "small"), shard_bytes=20_000)
    assert len([f for f in os.listdir(tmp_path / "small") if f.endswith(".safetensors")]) > 1
    saved = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "small")).state_dict()
    assert saved.keys() == plain.keys()
    for name, tensor in plain.items():
        assert torch.equal(saved[name], tensor), name
    if kind == "llama":  # ~102M parameters, 408 MB in fp32, saved in 32 MB files
        big = transformers.AutoConfig.for_model("llama", hidden_size=512, intermediate_size=1536, num_hidden_layers=32,
                                                num_attention_heads=8, num_key_value_heads=4, vocab_size=4096)
        streamed = _grown(lambda: save_initialised(big, str(tmp_path / "big"), shard_bytes=32 * 2 ** 20))
        whole = _grown(lambda: init_from_config(big).save_pretrained(str(tmp_path / "whole")))
        model_mb = _params(big) * 4 / 2 ** 20
        assert streamed < 0.3 * model_mb < whole, (streamed, whole, model_mb)
