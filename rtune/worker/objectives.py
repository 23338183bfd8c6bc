"""Training objectives: small functions from a batch and the model's token log-probs to a loss.

Each objective says what one unit of its loss is (`count`: a target token for SFT) and returns the
*sum* of its loss over a micro-batch (`loss`). The loop divides by the number of units in the whole
step -- every micro-batch on every rank -- so a step's gradient is the same however the samples fall
into micro-batches and workers (and samples of very different lengths weigh by their tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch

from rtune.worker.lm import IGNORE

LossOut = Tuple[torch.Tensor, Dict[str, torch.Tensor]]  # (loss summed over units, metric sums)


@dataclass(frozen=True)
class Objective:
    """count(batch) -> units in the batch; loss(logprobs, batch) -> (loss sum, {metric: sum over units})."""

    name: str
    count: Callable[[Dict[str, torch.Tensor]], int]
    loss: Callable[[torch.Tensor, Dict[str, torch.Tensor]], LossOut]


def target_tokens(batch: Dict[str, torch.Tensor]) -> int:
    """Tokens that carry the loss (a row's first token never does: nothing predicts it)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def sft_loss(logprobs: torch.Tensor, batch: Dict[str, torch.Tensor]) -> LossOut:
    """Cross-entropy over the target tokens: -sum log p(target)."""
    return -logprobs.sum(), {}


SFT = Objective("sft", target_tokens, sft_loss)
OBJECTIVES = {"sft": SFT}


def get_objective(name: str) -> Objective:
    return OBJECTIVES[name]
