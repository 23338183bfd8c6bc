"""QLoRA (peft=qlora): LoRA on every linear layer over a frozen base quantized to 4-bit NF4 by bitsandbytes, on the
CPU. Two real Ray workers under DDP: loss falls, a killed worker's run resumes to the same adapter as an uninterrupted
one, the checkpoint's adapter on the NF4-valued base reproduces the workers' eval loss (and on the unquantized base
does not), and the export loads with from_pretrained. The fit check's QLoRA terms, and the combinations it refuses
(tests/test_fit.py: QLoRA is the change a 7B model on this box needs)."""

from __future__ import annotations

import os

import pytest
import torch

from conftest import cli, compose, eval_loss_of, run_with_fault, tiny_overrides
from test_cli_errors import assert_one_line_error, run_cli

MISTRAL_7B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, max_position_embeddings=4096, vocab_size=32768)
LLAMA = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=4096)


def test_forward_and_backward_run_on_4bit_weights_here():
    """bitsandbytes' CPU kernels: a 4-bit linear layer's forward matches its dequantized weight, and a gradient
    reaches the input through it (what LoRA's backward needs); the weight packs 2 values a byte."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    torch.manual_seed(0)
    dense = torch.nn.Linear(128, 64, bias=False)
    layer = bnb.nn.Linear4bit(128, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4",
                              compress_statistics=True)
    layer.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                     compress_statistics=True)
    layer = layer.to("cpu")
    weight = layer.weight
    if weight.quant_state is None:  # quantized on the first move to a device (CPU included in bitsandbytes >= 0.48)
        layer._apply(lambda t: t)
    assert weight.dtype == torch.uint8 and weight.numel() == 128 * 64 // 2
    x = torch.randn(3, 128, requires_grad=True)
    out = layer(x)
    nf4 = dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    torch.testing.assert_close(out, x @ nf4.T, atol=1e-5, rtol=1e-5)
    assert 0 < (nf4 - dense.weight).abs().max() < 0.2 * dense.weight.abs().max()  # 16 levels a block, not the originals
    out.sum().backward()
    torch.testing.assert_close(x.grad, nf4.sum(0).expand(3, -1), atol=1e-5, rtol=1e-5)


def _estimate(*overrides, **shape):
    from rtune.fit import estimate, model_shape
    from rtune.model import load_model_config

    fields = ", ".join(f"{k}: {v}" for k, v in shape.items())
    cfg = compose(f"++model.from_config={{model_type: llama, {fields}}}", *overrides)
    model_config = load_model_config(cfg.model)
    s = model_shape(cfg, model_config)
    return s, estimate(cfg, s, "cuda")


def test_the_fit_check_counts_a_4bit_base():
    from rtune.fit import NF4_BYTES

    shape, bf16 = _estimate("peft=lora", "trainer.precision=bf16", **LLAMA)
    _, qlora = _estimate("peft=qlora", "trainer.precision=bf16", **LLAMA)
    n, linear = shape.params, shape.linear_params
    assert 0 < linear < n and linear == 4 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 704)  # the head is not
    frozen_bf16 = bf16.parts["weights"] - 4 * shape.lora_params
    assert frozen_bf16 == pytest.approx(2 * n)
    assert qlora.parts["weights"] == pytest.approx(NF4_BYTES * linear + 2 * (n - linear)
                                                   + 2 * shape.largest_linear_params + 4 * shape.lora_params)
    assert sum(shape.linear_numels) == linear and max(shape.linear_numels) == shape.largest_linear_params
    # a 7B-shaped base: the 4-bit one under 0.3x of the bf16 one (embeddings and head stay in bf16)
    big, big_bf16 = _estimate("peft=lora", "trainer.precision=bf16", **MISTRAL_7B)
    _, big_qlora = _estimate("peft=qlora", "trainer.precision=bf16", **MISTRAL_7B)
    adapters = 4 * big.lora_params
    assert (big_qlora.parts["weights"] - adapters) < 0.3 * (big_bf16.parts["weights"] - adapters)


@pytest.mark.parametrize("overrides, needles", [
    (("strategy=fsdp",), ("peft=qlora runs under strategy=ddp", "not strategy=fsdp")),
    (("strategy=deepspeed",), ("peft=qlora runs under strategy=ddp", "not strategy=deepspeed")),
    (("peft.base_dtype=bf16", "trainer.precision=bf16"), ("peft.base_dtype does not apply to peft=qlora",)),
    (("+experiment=arith_grpo", "rollout.engine=actors"), ("with peft=qlora use rollout.engine=policy",)),
])
def test_what_qlora_does_not_compose_with_is_one_line(overrides, needles):
    proc = run_cli("fit", "peft=qlora", *overrides, timeout=300)
    assert_one_line_error(proc, *needles)


@pytest.mark.slow
def test_qlora_trains_resumes_exactly_and_exports(ray_cluster, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from rtune.driver.launch import train
    from rtune.model import nf4_valued

    qlora = ("peft=qlora", "peft.r=4", "optim.lr=3e-2")
    cfg, recovered = run_with_fault(tmp_path, "qlora", *qlora, min_drop=0.05)  # rank 1 killed after step 4
    straight = train(compose(*tiny_overrides(tmp_path, "straight", *qlora, "num_workers=2", "trainer.max_steps=8",
                                             "trainer.checkpoint_every_steps=4", "trainer.eval_every_steps=4")))
    ckpt = recovered["latest_checkpoint"]
    adapter = load_file(os.path.join(ckpt, "adapter_model.safetensors"))
    assert adapter and all("lora_" in k and t.dtype == torch.float32 for k, t in adapter.items())
    assert not os.path.exists(os.path.join(ckpt, "model.safetensors"))  # the adapter, not the model
    uninterrupted = load_file(os.path.join(straight["latest_checkpoint"], "adapter_model.safetensors"))
    for name, tensor in uninterrupted.items():  # resumed exactly: the same adapter as a run never killed
        torch.testing.assert_close(adapter[name], tensor, rtol=0, atol=1e-6)
    assert recovered["eval_loss"] == pytest.approx(straight["eval_loss"], abs=1e-6)

    # The adapter on the base it trained against (NF4 values) reproduces the workers' eval loss; on the unquantized
    # base it does not: the workers trained on a 4-bit base
    base_dir = os.path.join(ckpt, "base_model")
    on_nf4 = PeftModel.from_pretrained(nf4_valued(base_dir), ckpt).eval()
    on_fp32 = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), ckpt).eval()
    nf4_error = abs(eval_loss_of(on_nf4, cfg) - recovered["eval_loss"])
    fp32_error = abs(eval_loss_of(on_fp32, cfg) - recovered["eval_loss"])
    assert nf4_error < 1e-5 and fp32_error > 10 * nf4_error, (nf4_error, fp32_error)

    out = tmp_path / "exported"
    proc = cli("export", ckpt, str(out))
    assert proc.returncode == 0, proc.stderr
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    assert {p.dtype for p in exported.parameters()} == {torch.bfloat16}  # merged into the dequantized base, bf16
    ids = torch.randint(0, 500, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = on_nf4(input_ids=ids).logits
        got = exported(input_ids=ids).logits.float()
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()  # bf16 rounding of the merged weights
    assert "QLoRA (merged" in (out / "README.md").read_text()
    gen = cli("generate", ckpt, "prompt=fn main() {", "max_new_tokens=8")
    assert gen.returncode == 0 and gen.stdout.startswith("fn main() {"), gen.stderr
