"""Online RL's batch source: each step, groups of sampled completions for the step's prompts, scored and turned
into micro-batches the GRPO objective trains on.

    next_step(step): this rank's prompts of the step (the global seeded order of `order.py`, the same for any worker
        count) -> objective.num_generations completions each, from the rollout engine -> rewards (Ray tasks) ->
        advantages within each group (a group never spans ranks) -> rows of prompt + completion with labels on the
        completion, `advantages`, behaviour `old_logprobs` (engine=actors) and reference `ref_logprobs` (beta > 0)

Sampling is reproducible: completion j of a prompt at step s draws from a generator seeded by (seed, s, the prompt's
tokens, j), so a resumed run samples what the uninterrupted one did. The rollout engine is `PolicyRollouts` (the
worker's own current model) or the actor pool of `rollout_pool.py`; both `request` a step's groups and `collect`
them, so with `rollout.max_staleness=1` the actors generate step s+1 while the learner trains step s.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from rtune.data.benchmarks import COMPLETION_STOP, prompt_text, to_check
from rtune.engine import Completion, Sampling, encode_prompts
from rtune.rewards import Rewards
from rtune.tokens import IGNORE
from rtune.worker.advantages import group_advantages, zero_std_groups
from rtune.worker.batches import MicroBatch
from rtune.worker.collectives import all_reduce_max, all_reduce_sum
from rtune.worker.order import GlobalOrder

Generate = Callable[[List[List[int]], Sampling], List[List[Completion]]]


def is_code_task(record: Dict[str, Any]) -> bool:
    """A benchmark-style Rust task (rust_eval's fields): shown and checked the way `rtune eval` does."""
    return isinstance(record.get("prompt"), str) and "entry_point" in record and "test" in record


class PromptView:
    """How a record is shown to the model, and how a completion reaches the rewards.

    Plain string prompts are encoded as SFT's prompt_completion format encodes them (no special tokens), or, with a
    chat template (rollout.chat), as a user turn; message lists always go through the template. Rust tasks are shown
    as `rtune eval` shows them: the code prefix (generation stops at the function's closing brace) or the chat ask.
    """

    def __init__(self, tokenizer, chat: Optional[bool], records: Sequence[Dict[str, Any]]):
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
        code = any(is_code_task(r) for r in records[:64])
        self.stop = (COMPLETION_STOP,) if code and not self.chat else ()

    def style(self, record: Dict[str, Any]) -> str:
        return "chat" if self.chat or isinstance(record["prompt"], list) else "completion"

    def encode(self, record: Dict[str, Any]) -> List[int]:
        prompt, chat = record["prompt"], self.style(record) == "chat"
        if is_code_task(record):
            prompt = prompt_text(record, self.style(record))
        if chat:
            return encode_prompts(self.tokenizer, [prompt], chat=True)[0]
        return self.tokenizer.backend_tokenizer.encode(prompt, add_special_tokens=False).ids

    def for_reward(self, record: Dict[str, Any], completion: Completion):
        if is_code_task(record):
            return to_check(record, completion.text, self.style(record), completion.stop_reason)
        return record, completion.text


class PolicyRollouts:
    """rollout.engine=policy: the worker's own current model generates its groups when they are collected (never
    ahead of the step, so the source never calls `request` on it)."""

    ahead = False

    def __init__(self, generate: Generate):
        self.generate = generate

    def collect(self, step: int, prompt_ids: List[List[int]], sampling: Sampling) -> List[List[Completion]]:
        return self.generate(prompt_ids, sampling)

    stats: Dict[str, float] = {}

    def sync(self, step: int) -> None:
        """Nothing to send: the policy is the learner."""


def step_sampling(base: Sampling, seed: int, step: int) -> Sampling:
    """The sampling of step `step`: its own seed, so draws differ between steps and repeat on resume."""
    return replace(base, seed=int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


class RolloutSource:
    """The batch source of objective=grpo (see the module docstring).

    Args:
        cfg: The run's config (objective, rollout, trainer.micro_batch_size, seed, max_steps).
        records: The training prompts (each a `prompt` and the columns rewards read).
        val_records: The held-out prompts eval_reward is measured on.
        view: How prompts are encoded and completions checked.
        engine: Where completions come from (`PolicyRollouts`, or the actor pool's client).
        rewards: The run's reward functions.
        grad_accum_steps: Micro-batches (of trainer.micro_batch_size prompts) per rank per step.
        pad_id: The token rows are right-padded with (no loss is taken there).
        reference: With beta > 0, the reference model (`token_logprobs(batch)`).
        position: The global position a checkpoint saved, or None.
    """

    def __init__(self, cfg, records: List[Dict[str, Any]], val_records: List[Dict[str, Any]], view: PromptView,
                 engine, rewards: Rewards, rank: int, world_size: int, grad_accum_steps: int, device, pad_id: int,
                 reference=None, position: Optional[Dict[str, int]] = None):
        r, micro = cfg.rollout, cfg.trainer.micro_batch_size
        self.ob, self.seed, self.max_steps = cfg.objective, cfg.seed, cfg.trainer.max_steps
        self.sampling = Sampling(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                                 n=cfg.objective.num_generations, stop=view.stop)
        self.records, self.val_records, self.view = records, val_records, view
        self.engine, self.rewards = engine, rewards
        self.rank, self.world_size, self.device = rank, world_size, device
        self.pad_id, self.reference = pad_id, reference
        self.rows_per_step = world_size * micro * grad_accum_steps  # prompts per step
        self.order = GlobalOrder(len(records), cfg.seed, self.rows_per_step, micro, **(position or {}))
        self._encoded: Dict[int, List[int]] = {}
        self._window: Dict[str, float] = {}
        self._window_steps = 0
        self._handed_over: Optional[float] = None  # when the last step's batches went to the loop

    @property
    def steps_per_epoch(self) -> int:
        return len(self.records) // self.rows_per_step

    @property
    def epoch(self) -> int:
        return self.order.epoch

    def _ids(self, index: int) -> List[int]:
        if index not in self._encoded:
            self._encoded[index] = self.view.encode(self.records[index])
        return self._encoded[index]

    def _prompt_ids(self, micro_batches) -> List[List[int]]:
        return [self._ids(i) for _, rows in micro_batches for i in rows]

    def next_step(self, step: int) -> List[MicroBatch]:
        mine = self.order.rank_micro_batches(self.rank, self.world_size)
        prompt_ids, sampling = self._prompt_ids(mine), step_sampling(self.sampling, self.seed, step)
        started = time.perf_counter()
        trained = {"train_s": started - self._handed_over} if self._handed_over else {}
        self.engine.sync(step)
        if self.engine.ahead and step + 1 < self.max_steps:  # the actors start on the next step's groups now
            upcoming = copy.deepcopy(self.order).rank_micro_batches(self.rank, self.world_size)
            self.engine.request(step + 1, self._prompt_ids(upcoming),
                                step_sampling(self.sampling, self.seed, step + 1))
        groups = self.engine.collect(step, prompt_ids, sampling)
        generated = time.perf_counter()
        records = [self.records[i] for _, rows in mine for i in rows]
        flat = [(record, c) for record, group in zip(records, groups) for c in group]
        checked = [self.view.for_reward(record, c) for record, c in flat]
        scores = self.rewards.score([r for r, _ in checked], [text for _, text in checked])
        scored = time.perf_counter()
        rewards = torch.tensor(scores.total, dtype=torch.float64)
        advantages = group_advantages(rewards, self.sampling.n, self.ob.advantage, self.ob.scale_rewards)
        completions = [c for _, c in flat]
        per_micro = len(mine[0][1]) * self.sampling.n if mine else 0
        batches = []
        for k, (index, rows) in enumerate(mine):
            span = slice(k * per_micro, (k + 1) * per_micro)
            tensors = self._tensors([prompt_ids[k * len(rows) + j // self.sampling.n] for j in range(per_micro)],
                                    completions[span], advantages[span])
            batches.append(MicroBatch(tensors, index, rows))
        self._add_stats(rewards, scores, completions, advantages,
                        {"generate_s": generated - started, "score_s": scored - generated, **trained,
                         **self.engine.stats})
        self._handed_over = time.perf_counter()
        return batches

    def _tensors(self, prompts: List[List[int]], completions: List[Completion], advantages: torch.Tensor
                 ) -> Dict[str, torch.Tensor]:
        """Rows of prompt + completion, right-padded: labels on the completion's tokens (none when masked)."""
        width = max(len(p) + len(c.token_ids) for p, c in zip(prompts, completions))
        ids, labels, old, lengths = [], [], [], []
        for p, c in zip(prompts, completions):  # plain lists, one tensor each at the end: rows are short and many
            pad = width - len(p) - len(c.token_ids)
            masked = self.ob.mask_truncated_completions and c.finish_reason == "length"
            ids.append(p + c.token_ids + [self.pad_id] * pad)
            labels.append([IGNORE] * len(p) + ([IGNORE] * len(c.token_ids) if masked else c.token_ids) + [IGNORE] * pad)
            old.append([0.0] * len(p) + c.logprobs + [0.0] * pad)
            lengths.append(len(p) + len(c.token_ids))
        n = len(prompts)
        ids, labels, old = torch.tensor(ids), torch.tensor(labels), torch.tensor(old, dtype=torch.float32)
        batch = {"input_ids": ids, "labels": labels, "position_ids": torch.arange(width).expand(n, width).clone(),
                 "n_tokens": torch.tensor(lengths),
                 "advantages": advantages.float()}
        if self.engine.ahead:  # generated by the actors' weights: the behaviour policy's log-probs correct the ratio
            batch["old_logprobs"] = old
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.reference is not None:
            batch["ref_logprobs"] = self.reference.token_logprobs(batch)
        return batch

    def _add_stats(self, rewards: torch.Tensor, scores, completions: List[Completion], advantages: torch.Tensor,
                   per_rank: Dict[str, float]) -> None:
        """This step's rollout statistics over every rank (a collective), added to the window `metrics` reports."""
        lengths = [len(c.token_ids) for c in completions]
        sums = {"completions": len(completions), "reward": float(rewards.sum()),
                "reward_sq": float((rewards ** 2).sum()), "advantage_abs": float(advantages.abs().sum()),
                "completion_tokens": float(sum(lengths)),
                "truncated": sum(c.finish_reason == "length" for c in completions),
                "groups": len(completions) // self.sampling.n,
                "zero_std_groups": zero_std_groups(rewards, self.sampling.n),
                "reward_failures": sum(scores.failures.values()), **per_rank,
                **{f"reward_{name}": sum(values) for name, values in scores.by_function.items()}}
        keys = sorted(sums)
        total = dict(zip(keys, all_reduce_sum([float(sums[k]) for k in keys], self.device)))
        longest = all_reduce_max([float(max(lengths, default=0))], self.device)[0]
        n = max(total["completions"], 1.0)
        mean = total["reward"] / n
        step = {"reward": mean, "reward_std": max(total["reward_sq"] / n - mean ** 2, 0.0) ** 0.5,
                "advantage_abs_mean": total["advantage_abs"] / n, "completion_tokens": total["completion_tokens"] / n,
                "completion_tokens_max": longest, "truncated_fraction": total["truncated"] / n,
                "zero_std_fraction": total["zero_std_groups"] / max(total["groups"], 1.0),
                "reward_failures": total["reward_failures"],
                **{k: total[k] / self.world_size for k in per_rank},  # seconds and staleness: the ranks' mean
                "generated_tokens_per_s": total["completion_tokens"] / max(total["generate_s"] / self.world_size, 1e-9),
                **{k: total[k] / n for k in keys if k.startswith("reward_") and k != "reward_failures"
                   and k != "reward_sq"}}
        for key, value in step.items():
            self._window[key] = self._window.get(key, 0.0) + value
        self._window_steps += 1

    def evaluate(self, generate: Generate, sharded: bool, samples: int) -> Dict[str, float]:
        """eval_reward: the mean reward of `samples` completions per held-out prompt, sampled as the rollouts are but
        with one seed for every evaluation (0 samples: one greedy completion), prompts split over the ranks (every
        rank calls it at the same step). Sharded models decode the same number of prompts on every rank."""
        mine = list(range(self.rank, len(self.val_records), self.world_size))
        prompt_ids = [self.view.encode(self.val_records[i]) for i in mine]
        if sharded:
            per_rank = -(-len(self.val_records) // self.world_size)
            prompt_ids += [prompt_ids[0] if prompt_ids else [self.pad_id]] * (per_rank - len(prompt_ids))
        sampling = replace(self.sampling, n=samples, seed=self.seed) if samples else \
            replace(self.sampling, n=1, temperature=0.0)
        groups = generate(prompt_ids, sampling)[:len(mine)]
        pairs = [(self.val_records[i], c) for i, group in zip(mine, groups) for c in group]
        completions = [c for _, c in pairs]
        checked = [self.view.for_reward(record, c) for record, c in pairs]
        scores = self.rewards.score([r for r, _ in checked], [text for _, text in checked])
        sums = {"n": len(pairs), "eval_reward": sum(scores.total),
                "eval_completion_tokens": sum(len(c.token_ids) for c in completions),
                **{f"eval_reward_{name}": sum(v) for name, v in scores.by_function.items()}}
        keys = sorted(sums)
        total = dict(zip(keys, all_reduce_sum([float(sums[k]) for k in keys], self.device)))
        n = max(total.pop("n"), 1.0)
        return {k: v / n for k, v in total.items()}

    def state(self) -> Dict[str, int]:
        return self.order.state()

    def metrics(self) -> Dict[str, Any]:
        """Counters, and the rollout statistics averaged over the steps since the last call (each log record)."""
        steps = max(self._window_steps, 1)
        out = {"prompts_seen": self.order.blocks_seen, "epoch": self.order.epoch,
               **{k: v / steps for k, v in self._window.items()}}
        self._window, self._window_steps = {}, 0
        return out
