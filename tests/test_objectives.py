"""Preference losses against hand computations on a tiny batch, and the pieces they stand on."""

from __future__ import annotations

import math

import pytest
import torch

from rtune.config import ObjectiveConfig
from rtune.tokens import IGNORE
from rtune.worker.objectives import PairLogps, make_objective, pair_logps


def _batch():
    """One row holding two pairs: sequences 0/1 (pair 0) and 2/3 (pair 1); the first token of each is a prompt.

    Reply log-probs per sequence: chosen 0: -1.0 - 2.0 = -3.0 over 2 tokens; rejected 0: -4.0 over 1;
    chosen 1: -0.5 over 1; rejected 1: -1.0 - 1.0 - 2.0 = -4.0 over 3.
    """
    sequences = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3, -1]])
    labels = torch.tensor([[IGNORE, 5, 6, IGNORE, 7, IGNORE, 8, IGNORE, 9, 9, 9, IGNORE]])
    logprobs = torch.tensor([[0.0, -1.0, -2.0, 0.0, -4.0, 0.0, -0.5, 0.0, -1.0, -1.0, -2.0, 0.0]],
                            dtype=torch.float64)
    return logprobs, {"sequence_ids": sequences, "labels": labels}


def _log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_pair_logps_sums_and_lengths():
    logprobs, batch = _batch()
    pairs = pair_logps(logprobs, batch)
    assert pairs.chosen.tolist() == [-3.0, -0.5] and pairs.rejected.tolist() == [-4.0, -4.0]
    assert pairs.chosen_tokens.tolist() == [2, 1] and pairs.rejected_tokens.tolist() == [1, 3]
    assert pairs.pair_ids.tolist() == [0, 1]
    with pytest.raises(RuntimeError, match="half of a preference pair"):
        pair_logps(logprobs[:, :3], {k: v[:, :3] for k, v in batch.items()})  # pair 0 without its rejected


REFERENCE = PairLogps(torch.tensor([-2.0, -1.0], dtype=torch.float64), torch.tensor([-3.0, -3.5], dtype=torch.float64),
                      torch.tensor([2.0, 1.0], dtype=torch.float64), torch.tensor([1.0, 3.0], dtype=torch.float64),
                      torch.tensor([0, 1]))


@pytest.mark.parametrize("loss_type, smoothing, sft_weight", [("sigmoid", 0.0, 0.0), ("sigmoid", 0.2, 0.5),
                                                              ("ipo", 0.0, 0.0), ("hinge", 0.0, 0.0)])
def test_dpo_matches_the_paper_formula(loss_type, smoothing, sft_weight):
    beta = 0.5
    logprobs, batch = _batch()
    batch["reference"] = REFERENCE
    loss, metrics = make_objective(ObjectiveConfig(name="dpo", beta=beta, loss_type=loss_type,
                                                   label_smoothing=smoothing, sft_weight=sft_weight)).loss(logprobs, batch)
    policy = {"c": [-3.0, -0.5], "r": [-4.0, -4.0], "nc": [2, 1], "nr": [1, 3]}
    ref = {"c": [-2.0, -1.0], "r": [-3.0, -3.5]}
    expected, rewards_c, rewards_r = 0.0, [], []
    for k in range(2):
        if loss_type == "ipo":  # length-averaged
            h = (policy["c"][k] / policy["nc"][k] - ref["c"][k] / policy["nc"][k]) - \
                (policy["r"][k] / policy["nr"][k] - ref["r"][k] / policy["nr"][k])
            expected += (h - 1 / (2 * beta)) ** 2
        else:
            h = (policy["c"][k] - ref["c"][k]) - (policy["r"][k] - ref["r"][k])
            if loss_type == "sigmoid":
                expected += -(1 - smoothing) * _log_sigmoid(beta * h) - smoothing * _log_sigmoid(-beta * h)
            else:
                expected += max(0.0, 1 - beta * h)
        expected += sft_weight * -policy["c"][k] / policy["nc"][k]
        rewards_c.append(beta * (policy["c"][k] - ref["c"][k]))
        rewards_r.append(beta * (policy["r"][k] - ref["r"][k]))
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    assert float(metrics["rewards_chosen"]) == pytest.approx(sum(rewards_c))
    assert float(metrics["rewards_rejected"]) == pytest.approx(sum(rewards_r))
    assert float(metrics["reward_margin"]) == pytest.approx(sum(rewards_c) - sum(rewards_r))
    assert float(metrics["reward_accuracy"]) == sum(c > r for c, r in zip(rewards_c, rewards_r))


def test_orpo_matches_the_paper_formula():
    lam = 0.25
    logprobs, batch = _batch()
    loss, metrics = make_objective(ObjectiveConfig(name="orpo", orpo_lambda=lam)).loss(logprobs, batch)
    expected = 0.0
    for chosen, rejected in ((-3.0 / 2, -4.0 / 1), (-0.5 / 1, -4.0 / 3)):
        odds = lambda avg: math.exp(avg) / (1 - math.exp(avg))  # noqa: E731
        expected += -chosen + lam * -_log_sigmoid(math.log(odds(chosen) / odds(rejected)))
    assert float(loss) == pytest.approx(expected, rel=1e-10)
    assert float(metrics["reward_accuracy"]) == 2 and float(metrics["rewards_chosen"]) == pytest.approx(lam * -2.0)


@pytest.mark.parametrize("smoothing, sft_weight", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.7), (0.2, 0.5)])
def test_simpo_matches_the_paper_formula(smoothing, sft_weight):
    beta, gamma = 2.0, 0.5
    logprobs, batch = _batch()
    loss, metrics = make_objective(ObjectiveConfig(name="simpo", beta=beta, gamma=gamma, label_smoothing=smoothing,
                                                   sft_weight=sft_weight)).loss(logprobs, batch)
    expected = 0.0
    for c, r in ((-1.5, -4.0), (-0.5, -4.0 / 3)):  # length-averaged reply log-probs of the two pairs
        h = beta * c - beta * r - gamma
        expected += -(1 - smoothing) * _log_sigmoid(h) - smoothing * _log_sigmoid(-h) + sft_weight * -c
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    assert float(metrics["reward_margin"]) == pytest.approx(beta * ((-1.5 + 4.0) + (-0.5 + 4.0 / 3)))


def test_sft_counts_target_tokens():
    logprobs, batch = _batch()
    sft = make_objective(ObjectiveConfig(name="sft"))
    loss, _ = sft.loss(logprobs, batch)
    assert float(loss) == pytest.approx(11.5) and sft.count(batch) == 7
