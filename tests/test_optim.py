"""The learning-rate schedule and the weight-decay groups."""

from __future__ import annotations

import math

import pytest
import torch

from rtune.config import OptimConfig
from rtune.worker.optim import build_optimizer, build_scheduler, lr_factor, param_groups


def test_warmup_then_cosine_to_the_floor():
    cfg = OptimConfig(warmup_steps=10, min_lr_ratio=0.1, schedule="cosine")
    assert lr_factor(0, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(10, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(55, 100, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 100, cfg) == pytest.approx(0.1)
    factors = [lr_factor(s, 100, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_linear_and_constant():
    assert lr_factor(50, 100, OptimConfig(warmup_steps=0, schedule="constant")) == 1.0
    assert lr_factor(50, 100, OptimConfig(warmup_steps=0, schedule="linear", min_lr_ratio=0.0)) == pytest.approx(0.5)


def test_no_decay_on_biases_and_norms_and_tied_weights_once():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 10))
    model[2].weight = model[0].weight  # tie, as GPT-2 does
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) == 1  # the tied matrix, once
    assert all(p.dim() == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 3


def test_scheduler_state_is_plain_data():
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, OptimConfig(lr=1.0, warmup_steps=2))
    sched = build_scheduler(opt, 10, OptimConfig(lr=1.0, warmup_steps=2))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    buffer = __import__("io").BytesIO()
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["last_epoch"] == 1
