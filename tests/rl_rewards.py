"""Reward functions for the tests of online RL (imported by Ray tasks: conftest puts tests/ on their path)."""

import time


def starts_with_one(prompt, completion, **columns):
    return float(completion.strip().startswith("1"))


def raises(prompt, completion, **columns):
    raise ValueError("a bug in the user's reward")


def hangs(prompt, completion, **columns):
    time.sleep(60)
    return 1.0


def nan(prompt, completion, **columns):
    return float("nan")


def not_a_number(prompt, completion, **columns):
    return "yes"


def length(prompt, completion, answer, **columns):
    return float(len(completion))


def batched_length(prompts, completions, **columns):
    return [float(len(c)) for c in completions]


def batched_wrong_count(prompts, completions, **columns):
    return [1.0]
