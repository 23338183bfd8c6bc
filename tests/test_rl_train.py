"""Online RL end to end on real Ray, 2 CPU workers: GRPO raises the reward with either rollout engine, a killed worker
is recovered and the resumed run equals the uninterrupted one, LoRA and FSDP2 (with the reference's KL) train, and
the rollout actors hold exactly the learner's weights after a sync.

The policy is a tiny GPT-2 given a short SFT warm start on the bundled sums (module fixture); the reward,
`rl_rewards:starts_with_one`, is a user's function run as Ray tasks: about half of the warm start's answers start
with a 1, so groups differ and GRPO has something to push.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import compose

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warm_start(ray_cluster, tmp_path_factory):
    from rtune.driver.launch import train

    out = tmp_path_factory.mktemp("warm")
    summary = train(compose("+experiment=arith_sft", f"storage_path={out}", "run_name=sft", "trainer.max_steps=60",
                            "trainer.eval_every_steps=60", "trainer.checkpoint_every_steps=60"), keep_ray=True)
    return summary["latest_checkpoint"]


def grpo(tmp_path, name: str, warm: str, *extra: str):
    return compose("objective=grpo", "data=arith_prompts", f"model.name_or_path={warm}", f"storage_path={tmp_path}",
                   f"run_name={name}", "rewards=[rl_rewards:starts_with_one]", "objective.num_generations=4",
                   "rollout.max_new_tokens=4", "rollout.eval_max_prompts=32", "rollout.eval_samples=2",
                   "trainer.micro_batch_size=8", "trainer.max_steps=8", "trainer.log_every_steps=1",
                   "trainer.eval_every_steps=4", "trainer.checkpoint_every_steps=4", "optim.lr=1e-3",
                   "optim.warmup_steps=0", "optim.schedule=constant", "optim.weight_decay=0",
                   "generation.max_batch_size=64", *extra)


def steps(run_dir: str):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r for r in records if "reward" in r}, {r["step"]: r["eval_reward"] for r in records
                                                               if "eval_reward" in r}


def test_policy_rollouts_raise_the_reward_and_a_killed_worker_resumes_exactly(tmp_path, warm_start):
    from rtune.driver.launch import train

    whole = train(grpo(tmp_path, "whole", warm_start), keep_ray=True)
    trained, evals = steps(whole["run_dir"])
    assert sorted(trained) == list(range(1, 9))
    first, last = sum(trained[s]["reward"] for s in (1, 2)) / 2, sum(trained[s]["reward"] for s in (7, 8)) / 2
    assert last > first + 0.15, (first, last)
    assert evals[8] > evals[0] + 0.1, evals
    assert all(trained[s]["reward_failures"] == 0 and trained[s]["completion_tokens"] > 0 for s in trained)
    assert "clip_fraction" in trained[1] and trained[1]["generate_s"] > 0

    killed = train(grpo(tmp_path, "killed", warm_start, "debug.fail_at_step=4", "debug.fail_rank=1",
                        "trainer.max_failures=1"), keep_ray=True)
    resumed, resumed_evals = steps(killed["run_dir"])
    assert sorted(resumed) == list(range(1, 9))  # every step once: the restart went on from step 4's checkpoint
    for s in range(1, 9):  # the same prompts, the same draws, the same weights: the same rewards and losses
        assert resumed[s]["reward"] == trained[s]["reward"], s
        assert resumed[s]["loss"] == pytest.approx(trained[s]["loss"], rel=1e-5, abs=1e-7), s
    assert resumed_evals[8] == evals[8]


def test_actor_rollouts_with_staleness_one_raise_the_reward(tmp_path, warm_start):
    from rtune.driver.launch import train

    summary = train(grpo(tmp_path, "actors", warm_start, "rollout.engine=actors", "rollout.num_actors=1",
                         "rollout.cpus_per_actor=0", "rollout.max_staleness=1"), keep_ray=True)
    trained, evals = steps(summary["run_dir"])
    first, last = sum(trained[s]["reward"] for s in (1, 2)) / 2, sum(trained[s]["reward"] for s in (7, 8)) / 2
    assert last > first + 0.15, (first, last)
    assert evals[8] > evals[0] + 0.1, evals
    assert trained[1]["staleness"] == 0 and all(trained[s]["staleness"] == 1 for s in range(2, 9))
    import ray

    assert not [a for a in ray.util.list_named_actors() if a.startswith("rtune-rollout-actors")]  # stopped


@pytest.mark.parametrize("peft", ["lora"])
def test_fsdp2_with_a_reference_trains(tmp_path, warm_start, peft):
    """FSDP2 with LoRA and beta > 0: the reference is the adapters switched off. (The frozen sharded copy a full
    fine-tune uses is DPO's live reference, tested in test_preference.py; GRPO on it and on ZeRO-3 was run by hand.)"""
    from rtune.driver.launch import train

    summary = train(grpo(tmp_path, f"fsdp-{peft}", warm_start, "strategy=fsdp", f"peft={peft}", "objective.beta=0.05",
                         "trainer.max_steps=3", "trainer.checkpoint_every_steps=3", "trainer.eval_every_steps=3"),
                    keep_ray=True)
    trained, evals = steps(summary["run_dir"])
    assert trained[1]["kl"] == pytest.approx(0.0, abs=1e-6)  # before any update the policy is the reference
    assert trained[3]["kl"] > 1e-6
    assert summary["latest_checkpoint"].endswith("checkpoint_00000003") and 3 in evals


def test_actor_weights_after_a_sync_equal_the_learners(ray_cluster, tmp_path):
    """What the actors generate with is the learner's model: token log-probs equal to 1e-6 after load_weights."""
    import ray

    from rtune.data.pipeline import prepare_data
    from rtune.driver.rollout_pool import start_pool, stop_pool
    from rtune.model import apply_lora, build_model, fit_embeddings, load_tokenizer_from
    from rtune.worker.lm import TokenLogprobs

    for peft in ("none", "lora"):
        cfg = compose("objective=grpo", "data=arith_prompts", "rewards=[exact_match]", f"peft={peft}",
                      "rollout.engine=actors", "rollout.cpus_per_actor=0", f"run_name=sync-{peft}",
                      "model.from_config.n_layer=2", "model.from_config.n_embd=64", "model.from_config.n_head=2")
        prepared, _ = prepare_data(cfg)
        tokenizer = load_tokenizer_from(prepared.tokenizer_dir, trust_remote_code=False)
        torch.manual_seed(cfg.seed)  # built as the loop builds it; then trained (here: perturbed) away from the actor's
        learner = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id)
        fit_embeddings(learner, len(tokenizer))
        if peft == "lora":
            learner = apply_lora(learner, cfg.peft)
        with torch.no_grad():
            for name, p in learner.named_parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.5 if "lora_B" in name else torch.randn_like(p) * 0.02)
        learner.eval()
        ids = [[5, 9, 12, 7, 3, 30, 2, 8]]
        labels = torch.tensor(ids)
        mine = TokenLogprobs(learner)(labels, labels, torch.arange(8)[None])[0, 1:]
        actors = start_pool(cfg, prepared)
        try:
            before = ray.get(actors[0].token_logprobs.remote(ids))[0]
            assert not torch.allclose(before, mine, atol=1e-3)
            weights = {n: p.detach().clone() for n, p in learner.named_parameters() if p.requires_grad}
            ray.get(actors[0].load_weights.remote(weights, 0))
            after = ray.get(actors[0].token_logprobs.remote(ids))[0]
            assert torch.allclose(after, mine.detach(), atol=1e-6), (after - mine).abs().max()
        finally:
            stop_pool(actors)
