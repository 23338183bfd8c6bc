"""Online RL's own section: how rollouts are generated (`rollout.*`), and the rewards that score them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rtune.config.checks import ROLLOUT_ENGINES, _at_least_one, _one_of
from rtune.errors import UserError


@dataclass
class RolloutConfig:
    """Rollouts of objective=grpo: each step samples objective.num_generations completions for each of its prompts
    (trainer.micro_batch_size prompts per micro-batch), scores them with `rewards`, and trains on them.

    Args:
        engine: `policy`: every worker generates its own prompts' groups with its current weights (on-policy; the
            default, and the one for CPU). `actors`: a pool of generation actors beside the workers (the shared
            engine: transformers, or vLLM with generation.backend=vllm) generates the next step's groups while the
            learner trains on this one, and gets the learner's weights every sync_every_steps through Ray's object
            store.
        max_new_tokens: Tokens each completion may have at most (one cut there is "truncated").
        temperature: Sampling temperature (log-probs for the loss are at temperature 1, as the model defines them).
        top_p: Nucleus sampling.
        chat: Render a prompt with the tokenizer's chat template: null does so when the tokenizer has one (a
            message-list prompt always is).
        num_actors: engine=actors: generation actors (worker i sends its prompts to actor i mod num_actors).
        cpus_per_actor: CPU cores each actor reserves (0 lets actors share the workers' cores, e.g. on a 2-core box).
        gpus_per_actor: GPUs each actor reserves (vLLM).
        sync_every_steps: engine=actors: the learner's weights go to the actors every this many steps.
        max_staleness: engine=actors: 0 generates each step's groups after the sync before it (no overlap); 1 lets
            the actors generate step s+1 while the learner trains step s, so its groups come from weights one sync
            older, and the behaviour log-probs the actors return correct the ratio.
        reward_timeout_s: A reward call still running after this many seconds scores 0 (counted as a timeout).
        eval_max_prompts: Held-out prompts scored for eval_reward (null: all of the validation split).
        eval_samples: Completions sampled per held-out prompt for eval_reward (the rollouts' sampling, with one seed
            for every evaluation, so two evaluations differ only by the weights); 0 decodes greedily instead.
    """

    engine: str = "policy"
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    chat: Optional[bool] = None
    num_actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    sync_every_steps: int = 1
    max_staleness: int = 1
    reward_timeout_s: float = 10.0
    eval_max_prompts: Optional[int] = None
    eval_samples: int = 4

    def check(self) -> None:
        _one_of("rollout.engine", self.engine, ROLLOUT_ENGINES, "policy or actors")
        _at_least_one({"rollout.max_new_tokens": self.max_new_tokens, "rollout.num_actors": self.num_actors,
                       "rollout.sync_every_steps": self.sync_every_steps})
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise UserError(f"rollout.temperature must be > 0 (a group needs different completions; got "
                            f"{self.temperature}) and rollout.top_p in (0, 1] (got {self.top_p})")
        if self.max_staleness not in (0, 1):
            raise UserError(f"rollout.max_staleness must be 0 or 1, got {self.max_staleness}")
        if self.cpus_per_actor < 0 or self.gpus_per_actor < 0 or self.reward_timeout_s <= 0:
            raise UserError("rollout.cpus_per_actor and rollout.gpus_per_actor must be >= 0 and "
                            "rollout.reward_timeout_s > 0")
        if self.eval_samples < 0:
            raise UserError(f"rollout.eval_samples must be >= 0 (0: greedy), got {self.eval_samples}")
        if self.eval_max_prompts is not None and self.eval_max_prompts < 1:
            raise UserError(f"rollout.eval_max_prompts must be at least 1 (or null: all), got {self.eval_max_prompts}")
