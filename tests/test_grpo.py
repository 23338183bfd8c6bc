"""Online RL's pieces against hand computations: the GRPO-family losses, advantages, rewards that fail, prompt data,
the settings' rules, and the LoRA merge the vLLM rollout actors use. (Training runs: test_rl_train.py.)"""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import compose
from rtune.config import ObjectiveConfig, validate
from rtune.errors import UserError
from rtune.tokens import IGNORE
from rtune.worker.advantages import group_advantages, zero_std_groups
from rtune.worker.objectives import make_objective

# Two completions: 3 and 2 tokens after a 2-token prompt (row 1 is padded at the end).
LABELS = torch.tensor([[IGNORE, IGNORE, 5, 6, 7], [IGNORE, IGNORE, 8, 9, IGNORE]])
MASK = [[0, 0, 1, 1, 1], [0, 0, 1, 1, 0]]
LOGP = torch.tensor([[0.0, 0.0, -1.0, -0.5, -2.0], [0.0, 0.0, -0.3, -1.2, 0.0]])
OLD = torch.tensor([[0.0, 0.0, -1.5, -0.5, -1.0], [0.0, 0.0, -0.3, -0.2, 0.0]])  # ratios e^0.5, 1, e^-1 | 1, e^-1
REF = torch.tensor([[0.0, 0.0, -1.2, -0.4, -2.5], [0.0, 0.0, -0.1, -1.0, 0.0]])
ADV = torch.tensor([1.0, -0.5])


def _hand_token_losses(eps_low: float, eps_high: float, beta: float):
    """Per-token loss, clipped flag and k3 by the formula, one scalar at a time."""
    out = []
    for i in range(2):
        row = []
        for t in range(5):
            if not MASK[i][t]:
                continue
            r = math.exp(LOGP[i, t] - OLD[i, t])
            a = float(ADV[i])
            clipped_r = min(max(r, 1 - eps_low), 1 + eps_high)
            loss = -min(r * a, clipped_r * a)
            d = float(REF[i, t] - LOGP[i, t])
            k3 = math.exp(d) - d - 1
            clipped = (r < 1 - eps_low and a < 0) or (r > 1 + eps_high and a > 0)
            row.append((loss + beta * k3, clipped, k3))
        out.append(row)
    return out


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_each_loss_type_equals_the_hand_computation(loss_type):
    cfg = ObjectiveConfig(name="grpo", loss_type=loss_type, beta=0.04, epsilon_low=0.2, epsilon_high=0.28)
    objective = make_objective(cfg, max_new_tokens=4)
    batch = {"labels": LABELS, "advantages": ADV, "old_logprobs": OLD, "ref_logprobs": REF}
    logprobs = LOGP.clone().requires_grad_(True)
    loss_sum, metrics = objective.loss(logprobs, batch)
    units = objective.count(batch)
    rows = _hand_token_losses(0.2, 0.28, 0.04)
    tokens = [t for row in rows for t in row]
    if loss_type == "dapo":  # one mean over every completion token
        expected, expected_units = sum(t[0] for t in tokens) / len(tokens), 5
        clip = sum(t[1] for t in tokens) / len(tokens)
    elif loss_type == "grpo":  # each completion's mean, then the mean over completions
        expected = sum(sum(t[0] for t in row) / len(row) for row in rows) / 2
        expected_units = 2
        clip = sum(sum(t[1] for t in row) / len(row) for row in rows) / 2
    else:  # a constant: completions x max_new_tokens
        expected, expected_units = sum(t[0] for t in tokens) / (2 * 4), 8
        clip = sum(sum(t[1] for t in row) / len(row) for row in rows) / 2
    assert units == expected_units
    assert float(loss_sum) / units == pytest.approx(expected, rel=1e-6)
    assert float(metrics["clip_fraction"]) / units == pytest.approx(clip, rel=1e-6)
    assert 0 < clip < 1  # the example clips some tokens and not others
    assert float(metrics["kl"]) > 0
    loss_sum.backward()
    assert logprobs.grad[0, 0] == 0 and logprobs.grad[1, 4] == 0  # prompt and padding carry nothing


def test_clipped_tokens_get_no_policy_gradient_and_on_policy_ratio_is_one():
    cfg = ObjectiveConfig(name="grpo", loss_type="dapo", beta=0.0)
    objective = make_objective(cfg, max_new_tokens=4)
    logprobs = LOGP.clone().requires_grad_(True)
    loss_sum, metrics = objective.loss(logprobs, {"labels": LABELS, "advantages": ADV, "old_logprobs": OLD})
    loss_sum.backward()
    # row 0 token 2: r = e^0.5 > 1.28 with A > 0 -> clipped, no gradient; row 1 token 3: r = e^-1 < 0.8, A < 0 -> same
    assert logprobs.grad[0, 2] == 0 and logprobs.grad[1, 3] == 0
    assert logprobs.grad[0, 3] == pytest.approx(-1.0)  # r = 1: d(-r A)/dlogp = -A
    assert float(metrics["clip_fraction"]) == 2
    # on-policy (no behaviour log-probs): r = 1 everywhere, the gradient is -A per token, nothing clipped
    logprobs = LOGP.clone().requires_grad_(True)
    loss_sum, metrics = objective.loss(logprobs, {"labels": LABELS, "advantages": ADV})
    loss_sum.backward()
    assert float(loss_sum) == pytest.approx(-(3 * 1.0 + 2 * -0.5))
    assert torch.allclose(logprobs.grad[0, 2:], torch.tensor([-1.0, -1.0, -1.0]))
    assert float(metrics["clip_fraction"]) == 0 and "kl" not in metrics


def test_advantages_group_rloo_and_unscaled():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])  # group 2 has zero variance
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std().item()  # unbiased, as TRL
    group = group_advantages(rewards, 4, "group", "group")
    assert torch.allclose(group[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4))
    assert torch.all(group[4:] == 0)
    unscaled = group_advantages(rewards, 4, "group", "none")
    assert torch.allclose(unscaled[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    rloo = group_advantages(rewards, 4, "rloo", "none")  # r_i minus the mean of the other three
    assert torch.allclose(rloo[:4], torch.tensor([1 - 1 / 3, 0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3]))
    assert torch.all(rloo[4:] == 0)
    assert zero_std_groups(rewards, 4) == 1


def test_rules_name_the_fix():
    base = ["objective=grpo", "data=arith_prompts", "rewards=[exact_match]"]
    validate(compose(*base))
    cases = {("data=arith_sft",): "data.format=prompt", ("rewards=[]",): "needs at least one reward",
             ("reward_weights=[1.0,2.0]",): "one per reward",
             ("objective.num_generations=1",): "at least 2",
             ("objective.loss_type=sigmoid",): "dapo, grpo, dr_grpo",
             ("rollout.temperature=0",): "rollout.temperature must be > 0",
             ("rollout.engine=vllm",): "policy or actors",
             ("trainer.checkpoint_metric=eval_loss",): "eval_reward"}
    for extra, words in cases.items():
        with pytest.raises(UserError, match=words.replace("(", r"\(").replace(".", r"\.")):
            validate(compose(*base, *extra))
    with pytest.raises(UserError, match="use objective=grpo"):
        validate(compose("data=arith_prompts"))


def test_experiments_compose_and_validate():
    cfg = compose("+experiment=arith_grpo", "model.name_or_path=/some/checkpoint")
    validate(cfg)
    assert (cfg.objective.name, cfg.data.format, cfg.rewards) == ("grpo", "prompt", ["exact_match"])
    gpu = compose("+experiment=qwen_coder_rust_grpo")
    validate(gpu)
    assert (gpu.rollout.engine, gpu.generation.backend, gpu.peft.method, gpu.rewards) == \
        ("actors", "vllm", "lora", ["rust_tests"])


def test_prompt_data_missing_column_is_one_line(tmp_path):
    from rtune.data.pipeline import prepare_data

    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) for i in range(9))
                    + "\n" + json.dumps({"prompt": "9+1="}) + "\n")
    cfg = compose("objective=grpo", "data.format=prompt", f"data.path={path}", "rewards=[exact_match]",
                  f"data.cache_dir={tmp_path}/cache")
    with pytest.raises(UserError, match="record 9: reward exact_match reads field 'answer'"):
        prepare_data(cfg)
    cfg.rewards = ["regex"]
    with pytest.raises(UserError, match="reads field 'pattern'"):
        prepare_data(cfg)
    path.write_text("\n".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) for i in range(10)) + "\n")
    cfg.rewards = ["exact_match"]
    prepared, _ = prepare_data(cfg)
    rows = [json.loads(line) for part in (prepared.train_path, prepared.val_path) for line in open(part)]
    assert sorted(r["prompt"] for r in rows) == sorted(f"{i}+1=" for i in range(10))  # disjoint, complete


def test_rewards_that_fail_score_zero_and_are_counted(ray_cluster):
    from rtune.rewards import Rewards

    records = [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2=", "answer": "4"}]
    completions = ["2", "five"]
    good = Rewards(["exact_match", "rl_rewards:length", "rl_rewards:batched_length"], [1.0, 0.5, 0.25])
    scores = good.score(records, completions)
    assert scores.by_function == {"exact_match": [1.0, 0.0], "length": [1.0, 4.0], "batched_length": [1.0, 4.0]}
    assert scores.total == [1.0 + 0.5 + 0.25, 0.0 + 2.0 + 1.0]
    assert sum(scores.failures.values()) == 0
    bad = Rewards(["rl_rewards:raises", "rl_rewards:nan", "rl_rewards:not_a_number", "rl_rewards:batched_wrong_count",
                   "rl_rewards:hangs", "exact_match"], timeout_s=1.0)
    scores = bad.score(records, completions)
    assert scores.failures == {"raises": 2, "nan": 2, "not_a_number": 2, "batched_wrong_count": 2, "hangs": 2,
                               "exact_match": 0}
    assert scores.total == [1.0, 0.0]  # the failing functions gave 0, the good one its score
    with pytest.raises(UserError, match="cannot be loaded"):
        Rewards(["rl_rewards:no_such_function"])


def test_merge_lora_matches_peft_merge():
    """The vLLM rollout actor folds the learner's adapters into its base weights as peft's merge would."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rtune.config import PeftConfig
    from rtune.driver.rollout_pool import merge_lora
    from rtune.model import apply_lora

    torch.manual_seed(0)
    config = AutoConfig.for_model("qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    model = AutoModelForCausalLM.from_config(config)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    peft_cfg = PeftConfig(method="lora", r=4, alpha=8, dropout=0.0)
    lora = apply_lora(model, peft_cfg)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # peft starts B at 0: make the adapters do something
    adapters = {n: p.detach() for n, p in lora.named_parameters() if p.requires_grad}
    merged = merge_lora(base, adapters, peft_cfg)
    reference = lora.merge_and_unload().state_dict()
    assert merged and all(torch.allclose(merged[k], reference[k], atol=1e-6) for k in merged)
    assert len(merged) == 2 * 7  # every projection of both layers (peft's default targets for Qwen2)
