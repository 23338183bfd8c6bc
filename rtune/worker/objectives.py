"""Training objectives: small functions from a batch and the model's token log-probs to a loss.

Each objective says what one unit of its loss is (`count`: a target token for SFT, a pair for the
preference objectives) and returns the *sum* of its loss over a micro-batch (`loss`). The loop divides
by the number of units in the whole step -- every micro-batch on every rank -- so a step's gradient is
the same however the samples fall into micro-batches and workers.

Preference objectives read pairs: the chosen and the rejected sample of a pair share a row (isolated
packing keeps them from seeing each other) and `sequence_ids` say which tokens belong to which
(2k: chosen of pair k, 2k + 1: its rejected). Written from the papers' formulas:

    dpo    Rafailov et al. 2023. h = [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)]
           sigmoid: -(1 - e) log s(beta h) - e log s(-beta h)     (e: label smoothing, cDPO)
           ipo:     (h - 1 / (2 beta))^2, on length-averaged log-probs (Azar et al. 2023, as TRL)
           hinge:   max(0, 1 - beta h)                            (SLiC)
           rewards: beta [log pi(y) - log ref(y)]
    orpo   Hong et al. 2024. -log pi(y_w)/|y_w| + lambda * -log s(log odds(y_w) - log odds(y_l)),
           odds(y) = p / (1 - p) with p the length-averaged probability; rewards: lambda * mean log pi(y)
    simpo  Meng et al. 2024. -(1 - e) log s(h) - e log s(-h), h = beta/|y_w| log pi(y_w) - beta/|y_l| log
           pi(y_l) - gamma; rewards: beta * mean log pi(y)

Every preference objective reports, summed over pairs: rewards_chosen, rewards_rejected, reward_margin
and reward_accuracy (the share of pairs whose chosen reward is the higher).

Online RL (`grpo`) reads rows of prompt + completion (labels: the completion's tokens) with each completion's
`advantages`, the behaviour policy's `old_logprobs` (absent on-policy: then r = 1 with the gradient of log pi) and,
with beta > 0, the reference's `ref_logprobs`. Per completion token, as TRL and verl compute it:

    grpo   -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) + beta k3,  r = exp(logp - logp_old),
           k3 = exp(ref - logp) - (ref - logp) - 1
           aggregated by loss_type: dapo (unit: a completion token), grpo (unit: a completion; each completion's
           token mean), dr_grpo (unit: max_new_tokens token slots of a completion)

Its metrics, clip_fraction and kl, are token means weighted like the loss (exact token means under dapo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, NamedTuple, Tuple

import torch
import torch.nn.functional as F

from rtune.config import ObjectiveConfig
from rtune.tokens import IGNORE

LossOut = Tuple[torch.Tensor, Dict[str, torch.Tensor]]  # (loss summed over units, metric sums)


@dataclass(frozen=True)
class Objective:
    """count(batch) -> units in the batch; loss(logprobs, batch) -> (loss sum, {metric: sum over units}).

    needs_reference: the loss reads `batch["reference"]`, the reference model's PairLogps.
    deterministic_forward: the loss compares forward passes (log-ratios of chosen and rejected replies), so
        the model runs without dropout, as TRL does: dropout noise would enter the comparison.
    has_perplexity: the loss is a cross-entropy per token, so exp(eval loss) is a perplexity worth logging.
    """

    name: str
    count: Callable[[Dict[str, torch.Tensor]], float]
    loss: Callable[[torch.Tensor, Dict[str, torch.Tensor]], LossOut]
    needs_reference: bool = False
    deterministic_forward: bool = False
    has_perplexity: bool = False


def target_tokens(batch: Dict[str, torch.Tensor]) -> int:
    """Tokens that carry the loss (a row's first token never does: nothing predicts it)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def sft_loss(logprobs: torch.Tensor, batch: Dict[str, torch.Tensor]) -> LossOut:
    """Cross-entropy over the target tokens: -sum log p(target)."""
    return -logprobs.sum(), {}


SFT = Objective("sft", target_tokens, sft_loss, has_perplexity=True)


class PairLogps(NamedTuple):
    """Summed reply log-probs and reply lengths (tokens) of the pairs in a batch, in pair order."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    pair_ids: torch.Tensor  # k for pair k (its sequences are 2k and 2k + 1)

    def averages(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.chosen / self.chosen_tokens.clamp(min=1), self.rejected / self.rejected_tokens.clamp(min=1)


def pair_logps(logprobs: torch.Tensor, batch: Dict[str, torch.Tensor]) -> PairLogps:
    """Sum each sequence's target log-probs (logprobs is 0 off the targets) and pair chosen with rejected."""
    sequences = batch["sequence_ids"]
    present = sequences >= 0
    ids, inverse = torch.unique(sequences[present], return_inverse=True)  # sorted: 2k, 2k + 1, ...
    sums = torch.zeros(len(ids), dtype=logprobs.dtype, device=logprobs.device).index_add(0, inverse, logprobs[present])
    is_target = (batch["labels"] != IGNORE)[present].to(logprobs.dtype)
    lengths = torch.zeros(len(ids), dtype=logprobs.dtype, device=logprobs.device).index_add(0, inverse, is_target)
    if len(ids) % 2 or not (bool((ids[0::2] % 2 == 0).all()) and bool((ids[1::2] == ids[0::2] + 1).all())):
        raise RuntimeError("a micro-batch holds half of a preference pair: pairs must be packed whole into rows")
    return PairLogps(sums[0::2], sums[1::2], lengths[0::2], lengths[1::2], ids[0::2] // 2)


def pairs_in(batch: Dict[str, torch.Tensor]) -> int:
    sequences = batch["sequence_ids"]
    return int(torch.unique(sequences[sequences >= 0]).numel()) // 2


def _reward_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> Dict[str, torch.Tensor]:
    chosen, rejected = chosen.detach(), rejected.detach()
    return {"rewards_chosen": chosen.sum(), "rewards_rejected": rejected.sum(),
            "reward_margin": (chosen - rejected).sum(), "reward_accuracy": (chosen > rejected).float().sum()}


def _smoothed_logsigmoid_loss(h: torch.Tensor, smoothing: float) -> torch.Tensor:
    return -(1 - smoothing) * F.logsigmoid(h) - smoothing * F.logsigmoid(-h)


def dpo(cfg: ObjectiveConfig) -> Objective:
    def loss(logprobs: torch.Tensor, batch: Dict[str, torch.Tensor]) -> LossOut:
        policy, reference = pair_logps(logprobs, batch), batch["reference"]
        if cfg.loss_type == "ipo":  # IPO regularises length-averaged log-ratios
            pc, pr = policy.averages()
            rc, rr = reference.averages()
        else:
            pc, pr, rc, rr = policy.chosen, policy.rejected, reference.chosen, reference.rejected
        h = (pc - rc) - (pr - rr)
        if cfg.loss_type == "sigmoid":
            losses = _smoothed_logsigmoid_loss(cfg.beta * h, cfg.label_smoothing)
        elif cfg.loss_type == "ipo":
            losses = (h - 1 / (2 * cfg.beta)) ** 2
        else:  # hinge
            losses = torch.relu(1 - cfg.beta * h)
        if cfg.sft_weight:
            losses = losses - cfg.sft_weight * policy.averages()[0]
        rewards = _reward_metrics(cfg.beta * (policy.chosen - reference.chosen),
                                  cfg.beta * (policy.rejected - reference.rejected))
        return losses.sum(), rewards

    return Objective("dpo", pairs_in, loss, needs_reference=True, deterministic_forward=True)


def orpo(cfg: ObjectiveConfig) -> Objective:
    def loss(logprobs: torch.Tensor, batch: Dict[str, torch.Tensor]) -> LossOut:
        chosen, rejected = pair_logps(logprobs, batch).averages()

        def log1m_exp(x: torch.Tensor) -> torch.Tensor:  # log(1 - e^x) for x < 0, kept finite near 0
            return torch.log1p(-torch.exp(x).clamp(max=1 - 1e-7))

        log_odds = (chosen - rejected) - (log1m_exp(chosen) - log1m_exp(rejected))
        losses = -chosen + cfg.orpo_lambda * -F.logsigmoid(log_odds)
        return losses.sum(), _reward_metrics(cfg.orpo_lambda * chosen, cfg.orpo_lambda * rejected)

    return Objective("orpo", pairs_in, loss, deterministic_forward=True)


def simpo(cfg: ObjectiveConfig) -> Objective:
    def loss(logprobs: torch.Tensor, batch: Dict[str, torch.Tensor]) -> LossOut:
        chosen, rejected = pair_logps(logprobs, batch).averages()
        losses = _smoothed_logsigmoid_loss(cfg.beta * chosen - cfg.beta * rejected - cfg.gamma, cfg.label_smoothing)
        if cfg.sft_weight:
            losses = losses - cfg.sft_weight * chosen
        return losses.sum(), _reward_metrics(cfg.beta * chosen, cfg.beta * rejected)

    return Objective("simpo", pairs_in, loss, deterministic_forward=True)


def grpo(cfg: ObjectiveConfig, max_new_tokens: int) -> Objective:
    def per_completion_units(mask: torch.Tensor) -> torch.Tensor:
        """What one completion counts for in the step's normaliser."""
        if cfg.loss_type == "dapo":
            return mask.sum(-1)
        return torch.full((mask.shape[0],), 1.0 if cfg.loss_type == "grpo" else float(max_new_tokens),
                          device=mask.device)

    def count(batch: Dict[str, torch.Tensor]) -> float:
        mask = (batch["labels"] != IGNORE).float()
        return float(per_completion_units(mask).sum())

    def loss(logprobs: torch.Tensor, batch: Dict[str, torch.Tensor]) -> LossOut:
        mask = (batch["labels"] != IGNORE).float()
        old = batch.get("old_logprobs")
        old = logprobs.detach() if old is None else old
        ratio = torch.exp(logprobs - old)
        advantages = batch["advantages"].unsqueeze(1).to(logprobs.dtype)
        clipped_ratio = torch.clamp(ratio, 1 - cfg.epsilon_low, 1 + cfg.epsilon_high)
        per_token = -torch.min(ratio * advantages, clipped_ratio * advantages)
        clipped = (((ratio < 1 - cfg.epsilon_low) & (advantages < 0))  # where the clip stops the gradient
                   | ((ratio > 1 + cfg.epsilon_high) & (advantages > 0)))
        metrics = {"clip_fraction": clipped.float()}
        if cfg.beta:
            delta = batch["ref_logprobs"] - logprobs
            kl = torch.exp(delta) - delta - 1
            per_token = per_token + cfg.beta * kl
            metrics["kl"] = kl.detach()
        tokens = mask.sum(-1)
        units = per_completion_units(mask)
        if cfg.loss_type == "grpo":
            loss_sum = ((per_token * mask).sum(-1) / tokens.clamp(min=1)).sum()
        else:  # dapo: the loop divides by the step's completion tokens; dr_grpo: by completions x max_new_tokens
            loss_sum = (per_token * mask).sum()
        # each completion's token mean, weighted by what it counts for: exact token means under dapo
        sums = {k: ((v * mask).sum(-1) / tokens.clamp(min=1) * units).sum() for k, v in metrics.items()}
        return loss_sum, sums

    return Objective("grpo", count, loss, deterministic_forward=True)


def make_objective(cfg: ObjectiveConfig, max_new_tokens: int = 0) -> Objective:
    """The objective `objective.name` names, with its settings (GRPO's dr_grpo needs rollout.max_new_tokens)."""
    if cfg.name == "sft":
        return SFT
    if cfg.name == "grpo":
        return grpo(cfg, max_new_tokens)
    return {"dpo": dpo, "orpo": orpo, "simpo": simpo}[cfg.name](cfg)
