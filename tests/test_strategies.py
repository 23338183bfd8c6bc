"""GPT-2 (Conv1D layers, tied embeddings) under LoRA, DeepSpeed ZeRO-2 and LoRA + ZeRO-2 with CPU offload,
with 2 real Ray workers on the CPU; export and generate. FSDP2 and ZeRO-3: tests/test_families.py.

Each strategy run is killed once (rank 1, right after step 4's checkpoint) and recovered by Ray
(max_failures=1), so every test also checks that resume continues at the exact step.
"""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli, eval_loss_of, run_with_fault

pytestmark = pytest.mark.slow


def test_lora_trains_only_adapters_and_merges_exactly(ray_cluster, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # Adapters on a random 2-layer base learn slowly: a LoRA-sized learning rate, a smaller bar.
    cfg, summary = run_with_fault(tmp_path, "lora", "peft=lora", "peft.r=4", "optim.lr=3e-2", min_drop=0.05)
    ckpt = summary["latest_checkpoint"]
    assert os.path.exists(os.path.join(ckpt, "adapter_model.safetensors"))
    assert os.path.exists(os.path.join(ckpt, "adapter_config.json"))
    assert not os.path.exists(os.path.join(ckpt, "model.safetensors"))  # the adapter, not the whole model
    assert 0 < summary["trainable_params"] < 0.1 * 759_296

    # Only adapters train: the optimizer holds exactly the adapter tensors, and the saved base is the
    # untouched initial model (a fresh seeded build of the same config).
    from rtune.model import build_model

    adapter = load_file(os.path.join(ckpt, "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    state = torch.load(os.path.join(ckpt, "trainer_state.pt"), weights_only=True)
    assert len(state["optimizer"]["state"]) == len(adapter)
    base = AutoModelForCausalLM.from_pretrained(os.path.join(ckpt, "base_model"))
    torch.manual_seed(cfg.seed)
    fresh = build_model(cfg.model, base.config.vocab_size, base.config.eos_token_id)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(base.state_dict()[name], tensor), name

    # The reloaded adapter reproduces the workers' eval loss; the merged model gives the same logits.
    model = PeftModel.from_pretrained(base, ckpt).eval()
    assert eval_loss_of(model, cfg) == pytest.approx(summary["eval_loss"], abs=1e-5)
    ids = torch.randint(0, 500, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        merged = model.merge_and_unload()(input_ids=ids).logits
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)

    out = tmp_path / "exported"
    proc = cli("export", ckpt, str(out))
    assert proc.returncode == 0, proc.stderr
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, adapted, atol=1e-5, rtol=1e-5)
    card = (out / "README.md").read_text()
    assert "LoRA (merged)" in card and "Steps:** 8" in card and "seq_len: 64" in card
    gen = cli("generate", ckpt, "prompt=fn main() {", "max_new_tokens=8")
    assert gen.returncode == 0 and gen.stdout.startswith("fn main() {"), gen.stderr


@pytest.mark.parametrize("stage", [2])  # ZeRO-3 and FSDP2: tests/test_families.py (Qwen2; FSDP2 + LoRA on both)
def test_deepspeed_zero(ray_cluster, tmp_path, stage):
    from transformers import AutoModelForCausalLM

    from rtune.worker.strategy import verify_deepspeed_shards

    cfg, summary = run_with_fault(tmp_path, f"zero{stage}", "strategy=deepspeed", f"strategy.zero_stage={stage}")
    ckpt = summary["latest_checkpoint"]
    shards = sorted(os.listdir(os.path.join(ckpt, "deepspeed", "state")))
    assert any("rank_1" in s for s in shards) and any("rank_0" in s for s in shards)  # every rank's shards
    assert not [f for _, _, fs in os.walk(ckpt) for f in fs if f.endswith(".py")]  # no code in checkpoints
    verify_deepspeed_shards(os.path.join(ckpt, "deepspeed"))
    model = AutoModelForCausalLM.from_pretrained(ckpt)  # the consolidated export
    assert eval_loss_of(model, cfg) == pytest.approx(summary["eval_loss"], abs=1e-4)
    gen = cli("generate", ckpt, "prompt=impl", "max_new_tokens=4", "temperature=0.8", "top_p=0.9")
    assert gen.returncode == 0 and gen.stdout.startswith("impl"), gen.stderr


def test_lora_composes_with_deepspeed_and_cpu_offload(ray_cluster, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg, summary = run_with_fault(tmp_path, "lora-zero", "peft=lora", "strategy=deepspeed", "strategy.zero_stage=2",
                                  "strategy.offload_optimizer=cpu", "optim.lr=3e-2", min_drop=0.05)
    ckpt = summary["latest_checkpoint"]
    assert os.path.isdir(os.path.join(ckpt, "deepspeed")) and summary["trainable_params"] < 0.1 * 759_296
    base = AutoModelForCausalLM.from_pretrained(os.path.join(ckpt, "base_model"))
    model = PeftModel.from_pretrained(base, ckpt).eval()
    assert eval_loss_of(model, cfg) == pytest.approx(summary["eval_loss"], abs=1e-5)


def test_a_bf16_base_under_lora_on_fsdp_trains_resumes_and_exports(ray_cluster, tmp_path):
    """peft.base_dtype=auto under trainer.precision=bf16: the frozen base in bf16 beside fp32 adapters, sharded by
    FSDP2 (mixed dtypes in one unit), killed once and resumed exactly; the export loads as a plain model."""
    from transformers import AutoModelForCausalLM

    _, summary = run_with_fault(tmp_path, "bf16-base", "peft=lora", "peft.r=4", "optim.lr=3e-2", "strategy=fsdp",
                                "trainer.precision=bf16", min_drop=0.05)
    ckpt = summary["latest_checkpoint"]
    adapter = load_file(os.path.join(ckpt, "adapter_model.safetensors"))
    assert adapter and all(t.dtype == torch.float32 for t in adapter.values())  # adapters train in fp32
    base = load_file(os.path.join(ckpt, "base_model", "model.safetensors"))
    assert {t.dtype for t in base.values()} == {torch.bfloat16}  # the base it adapts, as it was held
    out = tmp_path / "exported"
    proc = cli("export", ckpt, str(out))
    assert proc.returncode == 0, proc.stderr
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        logits = exported(input_ids=torch.randint(0, 500, (1, 16), generator=torch.Generator().manual_seed(0))).logits
    assert torch.isfinite(logits).all()
