"""The fit check: what the estimate is made of, and the one-line refusal of a run that cannot fit."""

from __future__ import annotations

import pytest

from conftest import compose
from rtune.fit import GB, estimate, model_shape
from rtune.model import load_model_config

LLAMA = ("++model.from_config={model_type: llama, hidden_size: 256, intermediate_size: 704, num_hidden_layers: 4, "
         "num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 512}")
MISTRAL_7B = ("++model.from_config={model_type: mistral, hidden_size: 4096, intermediate_size: 14336, "
              "num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, max_position_embeddings: 4096}")

LLAMA_70B = ("++model.from_config={model_type: llama, hidden_size: 8192, intermediate_size: 28672, "
             "num_hidden_layers: 80, num_attention_heads: 64, num_key_value_heads: 8, max_position_embeddings: 4096}")


def _estimate(*overrides, device="cpu"):
    cfg = compose(LLAMA, "model.tokenizer_vocab_size=4096", *overrides)
    model_config = load_model_config(cfg.model)
    model_config.vocab_size = 4096
    shape = model_shape(cfg, model_config)
    return shape, estimate(cfg, shape, device)


def test_each_memory_lever_lowers_its_part():
    shape, ddp = _estimate()
    assert shape.params == pytest.approx(4 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 704) + 2 * 4096 * 256 + 9 * 256,
                                         rel=0.01)
    n = shape.params
    assert ddp.parts["optimizer"] == pytest.approx(8 * n) and ddp.parts["gradients"] == pytest.approx(8 * n)  # + buckets
    _, zero3 = _estimate("strategy=deepspeed", "strategy.zero_stage=3")
    assert zero3.parts["gradients"] == pytest.approx(4 * n / 2) and zero3.parts["optimizer"] == pytest.approx(12 * n / 2)
    lora_shape, lora = _estimate("peft=lora")
    assert 0 < lora_shape.lora_params < n / 10 and lora.parts["optimizer"] == pytest.approx(8 * lora_shape.lora_params)
    _, checkpointed = _estimate("trainer.gradient_checkpointing=true")
    assert checkpointed.parts["activations"] < ddp.parts["activations"] / 2
    _, longer = _estimate("data.seq_len=512")
    assert longer.parts["activations"] == pytest.approx(2 * ddp.parts["activations"], rel=0.01)  # linear in tokens
    _, offloaded = _estimate("strategy=deepspeed", "strategy.offload_optimizer=cpu", device="cuda")
    assert offloaded.parts["optimizer"] == 0
    # traced activations: every layer keeps at least its input and its MLP's intermediate tensors
    assert shape.layer_bytes_per_token >= 4 * (256 + 2 * 704)


def test_seven_billion_parameters_are_refused_in_one_line(tmp_path):
    from test_cli_errors import assert_one_line_error, run_cli

    proc = run_cli("train", f"storage_path={tmp_path}", MISTRAL_7B)
    line = assert_one_line_error(proc, "this run needs ~", "7.0", "B parameters", "trainer.skip_fit_check=true")
    assert "GB per worker" in line and "RAM available" in line
    gpu = run_cli("train", f"storage_path={tmp_path}", MISTRAL_7B, "use_gpu=true", "gpu_memory_gb=80", "num_workers=8",
                  "trainer.precision=bf16")
    assert_one_line_error(gpu, "80 GB per GPU", "try peft=lora", "strategy=deepspeed strategy.zero_stage=3",
                          "strategy=fsdp")


def test_the_default_run_fits_and_says_so():
    from rtune.fit import check_fit

    cfg = compose()
    model_config = load_model_config(cfg.model)
    model_config.vocab_size = cfg.model.tokenizer_vocab_size
    result = check_fit(cfg, model_config, local_cluster=True)
    assert 0.3 * GB < result.total < 2 * GB


def test_weights_logits_runtime_and_sharded_terms_follow_the_model():
    """Each term of the estimate, against its formula (2 workers): a term dropped or mis-scaled fails here."""
    from rtune.fit import LOGITS_CHUNK_COPIES, RUNTIME_GB
    from rtune.tokens import chunk_tokens_for

    shape, ddp = _estimate()
    n, tokens = shape.params, 8 * 256  # the default micro batch x seq_len
    assert ddp.parts["weights"] == pytest.approx(4 * n)  # fp32 master weights, replicated
    assert ddp.parts["runtime"] == RUNTIME_GB["cpu"] * GB
    assert ddp.parts["logits"] == pytest.approx(LOGITS_CHUNK_COPIES * 4 * min(tokens, chunk_tokens_for(4096)) * 4096)
    _, chunked = _estimate("trainer.logits_chunk_tokens=100")
    assert chunked.parts["logits"] == pytest.approx(LOGITS_CHUNK_COPIES * 4 * 100 * 4096)
    _, on_gpu = _estimate(device="cuda")
    assert on_gpu.parts["runtime"] == RUNTIME_GB["cuda"] * GB and on_gpu.parts["weights"] == ddp.parts["weights"]
    # FSDP2: a shard plus two gathered blocks, each rank loading only its slices; built whole first
    # (strategy.fsdp_load=whole) that build stays reserved; on a CPU glibc keeps the freed gathered blocks
    fsdp_gpu = _estimate("strategy=fsdp", device="cuda")[1]
    assert fsdp_gpu.parts["weights"] == pytest.approx(4 * (n / 2 + 2 * shape.largest_block_params))
    assert fsdp_gpu.loading == pytest.approx(4 * (n / 2 + shape.largest_block_params) + RUNTIME_GB["cuda"] * GB)
    whole = _estimate("strategy=fsdp", "strategy.fsdp_load=whole", device="cuda")[1]
    assert whole.parts["weights"] == pytest.approx(fsdp_gpu.parts["weights"] + 4 * n)
    assert whole.loading == pytest.approx(4 * n + RUNTIME_GB["cuda"] * GB) == ddp.loading - RUNTIME_GB["cpu"] * GB + \
        RUNTIME_GB["cuda"] * GB
    assert _estimate("strategy=fsdp")[1].parts["weights"] == pytest.approx(fsdp_gpu.parts["weights"] + 4 * n)
    assert fsdp_gpu.parts["gradients"] == pytest.approx(4 * n / 2)
    assert fsdp_gpu.parts["optimizer"] == pytest.approx(4 * n)
    # ZeRO-1 shards the optimizer state, ZeRO-2 the gradients too; both flatten the weights into a new buffer
    _, zero1 = _estimate("strategy=deepspeed", "strategy.zero_stage=1")
    _, zero2 = _estimate("strategy=deepspeed", "strategy.zero_stage=2")
    for zero in (zero1, zero2):
        assert zero.parts["weights"] == pytest.approx(8 * n)
        assert zero.parts["optimizer"] == pytest.approx(8 * n / 2 + 4 * n / 2)  # moments + ZeRO's fp32 partition
    assert zero1.parts["gradients"] == pytest.approx(4 * n) and zero2.parts["gradients"] == pytest.approx(4 * n / 2)


def test_a_local_cluster_splits_the_machines_ram_among_its_workers(monkeypatch):
    from rtune import fit

    monkeypatch.setattr(fit, "_available_ram_bytes", lambda: 24 * GB)
    for workers, expected in (("2", 12), ("4", 6), ("[1,3]", 8)):  # an elastic group may grow to its max
        extra = ("trainer.max_failures=1",) if workers.startswith("[") else ()
        budget, what = fit.capacity(compose(f"num_workers={workers}", *extra), local_cluster=True)
        assert budget == pytest.approx(expected * GB) and f"{expected:.1f} GB per worker" in what, what
    assert fit.capacity(compose(), local_cluster=False)[0] is None  # a remote cluster's nodes are unknown here
    budget, what = fit.capacity(compose("use_gpu=true", "gpu_memory_gb=40"), local_cluster=True)
    assert budget == 40 * GB and "40 GB per GPU" in what


def test_a_bf16_base_halves_the_frozen_weights_and_is_suggested():
    shape, fp32 = _estimate("peft=lora", "trainer.precision=bf16", "peft.base_dtype=fp32")
    _, auto = _estimate("peft=lora", "trainer.precision=bf16")  # auto: bf16 under bf16 autocast
    from rtune.fit import heap_kept

    n, adapters, copy = shape.params, 4 * shape.lora_params, 4 * shape.params  # copy: the from-config base's
    casts = heap_kept(shape.param_numels, 2.0)  # on a CPU glibc keeps autocast's bf16 casts of an fp32 base
    assert fp32.parts["weights"] == pytest.approx(4 * n + adapters + copy + casts) and casts > 0
    assert auto.parts["weights"] == pytest.approx(2 * n + adapters + copy)
    _, zero3 = _estimate("peft=lora", "trainer.precision=bf16", "strategy=deepspeed", "strategy.zero_stage=3")
    assert zero3.loading < auto.loading  # ZeRO-3 builds partitioned; DDP builds the whole model in fp32 first
    from rtune.fit import _variants

    labels = [label for label, _ in _variants(compose(LLAMA, "peft=lora"), "cpu")]
    assert "trainer.precision=bf16 peft.base_dtype=bf16" in labels


def test_rtune_fit_answers_without_ray(tmp_path):
    """`rtune fit`: the estimate and exit 0 when it fits; the refusal and exit 1 when not; Ray never starts."""
    import subprocess
    import sys

    probe = ("import sys; from rtune.cli import main; code = main(sys.argv[1:]); import ray; "
             "assert not ray.is_initialized(), 'Ray started'; sys.exit(code)")
    fits = subprocess.run([sys.executable, "-c", probe, "fit"], capture_output=True, text=True, timeout=300)
    assert fits.returncode == 0, fits.stderr[-2000:]
    assert "expected peak memory:" in fits.stdout and "; fits" in fits.stdout
    big = subprocess.run([sys.executable, "-c", probe, "fit", MISTRAL_7B, "peft=lora", "strategy=fsdp",
                          "trainer.precision=bf16", "trainer.gradient_checkpointing=true"],
                         capture_output=True, text=True, timeout=300)
    assert big.returncode == 1, big.stderr[-2000:]
    refusal = [line for line in big.stderr.splitlines() if line.startswith("rtune: does not fit:")]
    assert len(refusal) == 1 and "7.01B parameters" in refusal[0] and "(bf16 base)" in refusal[0]
    assert refusal[0].endswith("try peft=qlora strategy=ddp")  # the change that fits on this box's 2 workers
    qlora = subprocess.run([sys.executable, "-c", probe, "fit", MISTRAL_7B, "peft=qlora", "trainer.precision=bf16",
                            "trainer.gradient_checkpointing=true"], capture_output=True, text=True, timeout=300)
    assert qlora.returncode == 0 and "; fits" in qlora.stdout, qlora.stderr[-2000:]
    # a 70B-shaped model fits no single change here: the line names what costs most instead
    huge = subprocess.run([sys.executable, "-c", probe, "fit", LLAMA_70B, "peft=qlora", "trainer.precision=bf16",
                           "trainer.gradient_checkpointing=true"], capture_output=True, text=True, timeout=300)
    assert huge.returncode == 1, huge.stderr[-2000:]
    assert "no single change fits (the largest costs: the 4-bit base, whole on every rank (DDP): 3" in huge.stderr
    bad = subprocess.run([sys.executable, "-m", "rtune", "fit", "peft.base_dtype=bf16"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "needs peft=lora and trainer.precision=bf16" in bad.stderr


def test_the_frozen_base_is_cast_to_bf16_where_asked():
    """Strategy._prepare: a bf16 base under LoRA (adapters stay fp32); DeepSpeed leaves it to its bf16 mode."""
    import torch
    import transformers

    from rtune.worker.strategy import DeepSpeedStrategy, Strategy

    config = transformers.AutoConfig.for_model("llama", num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                               num_key_value_heads=1, intermediate_size=64, vocab_size=100)
    for overrides, strategy, frozen in ((("trainer.precision=bf16",), Strategy, torch.bfloat16),
                                        (("trainer.precision=bf16", "peft.base_dtype=fp32"), Strategy, torch.float32),
                                        ((), Strategy, torch.float32),
                                        (("trainer.precision=bf16",), DeepSpeedStrategy, torch.float32)):
        cfg = compose("peft=lora", *overrides)
        s = strategy(cfg, 0, 1, torch.device("cpu"), 1)
        s._prepare(transformers.AutoModelForCausalLM.from_config(config), None, ())
        assert {p.dtype for p in s.raw.parameters() if not p.requires_grad} == {frozen}, overrides
        assert {p.dtype for p in s.raw.parameters() if p.requires_grad} == {torch.float32}


def test_glibc_keeps_only_the_gathered_tensors_below_its_mmap_threshold():
    """FSDP2 on a CPU gathers every tensor whole each step and frees it: glibc's heap keeps those up to 32 MiB
    (measured: the 1B model's training peak over its shards); larger ones are unmapped when freed."""
    from dataclasses import replace

    from rtune.fit import heap_kept

    shape = replace(_estimate()[0], param_numels=(10, 8 * 2 ** 20, 9 * 2 ** 20))  # 32 MiB and 36 MiB in fp32
    assert heap_kept(shape.param_numels, 4.0) == 4 * (10 + 8 * 2 ** 20)
    assert heap_kept(shape.param_numels, 2.0) == 2 * (10 + 17 * 2 ** 20)  # in bf16 both fit under the threshold
