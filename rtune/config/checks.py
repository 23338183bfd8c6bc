"""The choices the schema allows and the two checks most sections use; every message names the fix."""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

from rtune.errors import UserError

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")
PRECISIONS = ("fp32", "bf16")
FORMATS = ("text", "chat", "instruction", "prompt_completion", "preference", "prompt")
TRAIN_ON = ("assistant", "last_assistant", "all")
PACKINGS = ("concat", "isolated", "none")
ENGINES = ("datasets", "ray")
TRUNCATIONS = ("drop", "truncate")
OBJECTIVES = ("sft", "dpo", "orpo", "simpo", "grpo")
PREFERENCE_OBJECTIVES = ("dpo", "orpo", "simpo")
LOSS_TYPES = ("sigmoid", "ipo", "hinge")
GRPO_LOSS_TYPES = ("dapo", "grpo", "dr_grpo")
ROLLOUT_ENGINES = ("policy", "actors")
TRACKERS = ("tensorboard", "mlflow", "wandb")
SCHEDULES = ("cosine", "linear", "constant")


def _one_of(key: str, value: Any, choices: Tuple[str, ...], words: Optional[str] = None, suffix: str = "") -> None:
    if value not in choices:
        raise UserError(f"{key} must be {words or 'one of ' + ', '.join(choices)}, got {value!r}{suffix}")


def _at_least_one(values: Dict[str, int]) -> None:
    for key, value in values.items():
        if value < 1:
            raise UserError(f"{key} must be at least 1, got {value}: set {key}=1 or more")
