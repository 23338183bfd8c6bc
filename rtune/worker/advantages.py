"""Advantages of a group of completions of one prompt, from their rewards (GRPO family).

    group   A_i = r_i - mean(r)                          (GRPO, Shao et al. 2024)
    rloo    A_i = r_i - mean_{j != i}(r_j) = G/(G-1) (r_i - mean(r))   (RLOO, Ahmadian et al. 2024)
    scale_rewards=group divides by the group's standard deviation (unbiased, as TRL) + 1e-4; `none` does not
    (Dr. GRPO, Liu et al. 2025: the division up-weights prompts that are almost always right or wrong).

A group whose completions all score the same has A = 0 for each: it teaches nothing, and is counted
(`zero_std_groups`).
"""

from __future__ import annotations

import torch

STD_EPS = 1e-4  # TRL's


def group_advantages(rewards: torch.Tensor, group_size: int, kind: str = "group", scale: str = "group"
                     ) -> torch.Tensor:
    """rewards: [prompts * group_size], each prompt's group contiguous -> advantages of the same shape."""
    groups = rewards.double().view(-1, group_size)
    mean = groups.mean(dim=1, keepdim=True)
    advantages = groups - mean
    if kind == "rloo":
        advantages = advantages * group_size / (group_size - 1)
    if scale == "group":
        advantages = advantages / (groups.std(dim=1, keepdim=True) + STD_EPS)
    return advantages.view(-1).to(rewards.dtype)


def zero_std_groups(rewards: torch.Tensor, group_size: int) -> int:
    groups = rewards.view(-1, group_size)
    return int((groups.max(dim=1).values == groups.min(dim=1).values).sum())
