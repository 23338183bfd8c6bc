"""DPO, ORPO and SimPO with 2 real Ray workers on the CPU, on the bundled preference pairs.

The reference of a LoRA run is the model with its adapters disabled; of a full fine-tune, log-probs
precomputed once before step 1 and carried in every checkpoint. Held-out reward accuracy must rise
(above 0.8 for DPO) and the margin grow; a DPO run killed mid-run resumes to the same weights.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from conftest import compose, run_with_fault

from rtune.driver.launch import train
from rtune.metrics import read_metrics

pytestmark = pytest.mark.slow

PAIRS = ["data=rust_preference", "data.val_fraction=0.1", "model.from_config.n_layer=2", "model.from_config.n_embd=64",
         "model.from_config.n_head=2", "trainer.micro_batch_size=8", "trainer.log_every_steps=1",
         "optim.warmup_steps=2", "num_workers=2"]


def _evals(summary):
    records = read_metrics(os.path.join(summary["run_dir"], "metrics.jsonl"))
    return [r for r in records if "eval_reward_accuracy" in r]


def _run(tmp_path, name, *extra, steps=60):
    return train(compose(*PAIRS, f"storage_path={tmp_path}", f"run_name={name}", f"trainer.max_steps={steps}",
                         f"trainer.eval_every_steps={steps // 3}", f"trainer.checkpoint_every_steps={steps}", *extra))


def test_dpo_with_lora_learns_the_held_out_preferences(ray_cluster, tmp_path):
    summary = _run(tmp_path, "dpo-lora", "objective=dpo", "peft=lora", "optim.lr=5e-3")
    evals = _evals(summary)
    assert evals[0]["step"] == 0 and evals[0]["eval_reward_margin"] == 0  # policy == reference at the start
    assert evals[-1]["eval_reward_accuracy"] > 0.8, evals
    assert evals[-1]["eval_reward_margin"] > evals[1]["eval_reward_margin"] > 0, evals
    train_records = [r for r in read_metrics(os.path.join(summary["run_dir"], "metrics.jsonl")) if "loss" in r]
    assert all("reward_accuracy" in r and "rewards_chosen" in r for r in train_records)
    assert os.path.getsize(os.path.join(summary["run_dir"], "loss_curve.png")) > 1000


@pytest.mark.parametrize("strategy", [["strategy=fsdp"], ["strategy=deepspeed", "strategy.zero_stage=3"]],
                         ids=["fsdp", "zero3"])
def test_dpo_live_reference_is_sharded_like_the_policy_and_stays_put(ray_cluster, tmp_path, strategy):
    """reference=live under FSDP2 and ZeRO-3 (a frozen copy sharded like the policy): at step 0 the policy
    equals it (DPO loss ln 2, margin 0); training moves the policy away from it, not it with the policy."""
    summary = _run(tmp_path, "live", "objective=dpo", "objective.reference=live", "optim.lr=3e-3", *strategy, steps=6)
    evals = _evals(summary)
    assert evals[0]["eval_loss"] == pytest.approx(math.log(2), abs=1e-6) and evals[0]["eval_reward_margin"] == 0
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 0.02 and evals[-1]["eval_reward_margin"] > 0, evals


def test_lora_reference_is_the_base_model_exactly():
    """Adapters disabled gives exactly the base model's log-probs, however far the adapters have trained."""
    from peft import PeftModel  # noqa: F401  (peft must be importable)
    from transformers import AutoConfig, AutoModelForCausalLM

    from rtune.config import PeftConfig
    from rtune.model import apply_lora
    from rtune.worker.lm import TokenLogprobs

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", hidden_size=32, intermediate_size=64,
                                                                 num_hidden_layers=2, num_attention_heads=4,
                                                                 num_key_value_heads=2, vocab_size=200)).eval()
    ids = torch.randint(1, 200, (2, 16))
    positions = torch.arange(16).expand(2, -1)
    with torch.no_grad():
        expected = TokenLogprobs(base)(ids, ids, positions)
    model = apply_lora(base, PeftConfig(method="lora", r=4, alpha=8, dropout=0.0))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # adapters far from their zero start
    wrapped = TokenLogprobs(model).eval()
    with torch.no_grad():
        adapted = wrapped(ids, ids, positions)
        with model.disable_adapter():
            reference = wrapped(ids, ids, positions)
    assert not torch.allclose(adapted, expected, atol=1e-3)
    assert torch.equal(reference, expected)


def test_dpo_full_fine_tune_with_precomputed_reference_and_exact_resume(ray_cluster, tmp_path):
    """reference=precompute: the tables are the initial model's log-probs, do not change, ride in every
    checkpoint; a run killed after step 8 resumes to the weights of an uninterrupted one (1e-6)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from rtune.data.pipeline import prepare_data
    from rtune.data.rows import PackedRows, collate
    from rtune.model import build_model
    from rtune.worker.lm import TokenLogprobs
    from rtune.worker.objectives import pair_logps
    from rtune.worker.reference import REFERENCE_FILE, load_tables

    common = ("objective=dpo", "optim.lr=3e-3")
    straight = train(compose(*PAIRS, f"storage_path={tmp_path}", "run_name=dpo-full", *common,
                             "trainer.checkpoint_every_steps=8", "trainer.eval_every_steps=8", "trainer.max_steps=24"))
    evals = _evals(straight)
    assert evals[-1]["eval_reward_accuracy"] > 0.8 and evals[-1]["eval_reward_margin"] > 0, evals

    # The tables hold the initial model's reply log-probs: rebuild it (same seed) and compare on real rows.
    first, last = os.path.join(straight["run_dir"], "checkpoint_00000016"), straight["latest_checkpoint"]
    tables = load_tables(os.path.join(first, REFERENCE_FILE))
    assert all(np.array_equal(tables[s], load_tables(os.path.join(last, REFERENCE_FILE))[s]) for s in tables)
    cfg = compose(*PAIRS, f"storage_path={tmp_path}", "run_name=dpo-full", *common)
    from rtune.driver.preflight import finalize

    prepared, tokenizer = prepare_data(finalize(cfg))
    torch.manual_seed(cfg.seed)
    initial = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id).eval()
    rows = PackedRows(prepared.val_path, tokenizer.pad_token_id)
    batch = collate([rows[i] for i in range(min(4, len(rows)))])
    with torch.no_grad():
        pairs = pair_logps(TokenLogprobs(initial)(batch["input_ids"], batch["labels"], batch["position_ids"]).double(),
                           batch)
    np.testing.assert_allclose(tables["val"][2 * pairs.pair_ids.numpy()], pairs.chosen.numpy(), atol=1e-4)
    trained = AutoModelForCausalLM.from_pretrained(last).eval()
    with torch.no_grad():
        after = pair_logps(TokenLogprobs(trained)(batch["input_ids"], batch["labels"], batch["position_ids"]).double(),
                           batch)
    assert not np.allclose(after.chosen.numpy(), pairs.chosen.numpy(), atol=1e-2)  # the policy moved, the table not

    _, resumed = run_with_fault(tmp_path, "dpo-resumed", *common, base=PAIRS, steps=24, fail_at=8, min_drop=0.05)
    a, b = load_file(os.path.join(last, "model.safetensors")), load_file(
        os.path.join(resumed["latest_checkpoint"], "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6)


# From a random start ORPO's cross-entropy term dominates at lambda 0.1; lambda 1 lets its odds ratio show.
@pytest.mark.parametrize("objective, extra", [("orpo", ["objective.orpo_lambda=1.0"]), ("simpo", [])])
def test_reference_free_objectives_learn_the_held_out_preferences(ray_cluster, tmp_path, objective, extra):
    summary = _run(tmp_path, objective, f"objective={objective}", "optim.lr=1e-2", *extra, steps=45)
    evals = _evals(summary)
    assert evals[-1]["eval_reward_accuracy"] >= evals[0]["eval_reward_accuracy"] + 0.1, evals
    assert evals[-1]["eval_reward_margin"] > evals[0]["eval_reward_margin"] + 0.5, evals
