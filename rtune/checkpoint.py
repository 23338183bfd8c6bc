"""What a checkpoint holds, how rank 0 writes it, and how a run finds the one to resume from.

A checkpoint directory is a Hugging Face model directory plus resume state, and nothing executable:

    model.safetensors, config.json, generation_config.json   AutoModelForCausalLM.from_pretrained(dir)
    tokenizer.json, tokenizer_config.json, ...              AutoTokenizer.from_pretrained(dir)
    trainer_state.pt     optimizer, scheduler, per-rank RNG, data position, step (weights_only=True)
    rtune_config.json    the resolved config of the run
    rtune_checkpoint.json   written LAST: step, metrics and the size of every other file

The marker makes completeness checkable: a directory whose marker is missing, or whose files do not
match the sizes it lists, was cut short (a crash mid-write or mid-upload) and is never resumed from.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Optional

import torch

from rtune.config import ConfigError

MARKER = "rtune_checkpoint.json"
STATE = "trainer_state.pt"
CONFIG = "rtune_config.json"
FORMAT_VERSION = 1
_DIR_PATTERN = re.compile(r"^checkpoint_(\d+)$")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used; the message says which and why."""


def dir_name(step: int) -> str:
    """Checkpoint directory name: sortable by step, so the newest is easy to find on storage."""
    return f"checkpoint_{step:08d}"


def save(out_dir: str, model, tokenizer, trainer_state: Dict[str, Any], config: Dict[str, Any],
         metrics: Dict[str, Any]) -> None:
    """Write a complete checkpoint into out_dir (rank 0 only). The marker goes last."""
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    torch.save(trainer_state, os.path.join(out_dir, STATE))
    with open(os.path.join(out_dir, CONFIG), "w") as f:
        json.dump(config, f, indent=2)
    files = {name: os.path.getsize(os.path.join(out_dir, name))
             for name in sorted(os.listdir(out_dir)) if os.path.isfile(os.path.join(out_dir, name))}
    marker = {"format": FORMAT_VERSION, "step": trainer_state["step"], "metrics": metrics, "files": files}
    tmp = os.path.join(out_dir, f".{MARKER}.tmp")
    with open(tmp, "w") as f:
        json.dump(marker, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, MARKER))


def read_marker(ckpt_dir: str) -> Dict[str, Any]:
    """The marker of a complete checkpoint; CheckpointError if absent or if files do not match it."""
    path = os.path.join(ckpt_dir, MARKER)
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"checkpoint {ckpt_dir} does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"{ckpt_dir} is not a complete rtune checkpoint (no {MARKER})")
    try:
        with open(path) as f:
            marker = json.load(f)
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{ckpt_dir}: {MARKER} is unreadable") from None
    for name, size in files.items():
        full = os.path.join(ckpt_dir, name)
        if not os.path.isfile(full) or os.path.getsize(full) != size:
            raise CheckpointError(f"checkpoint {ckpt_dir} is incomplete or damaged: {name} is missing or truncated")
    return marker


def load_trainer_state(ckpt_dir: str) -> Dict[str, Any]:
    """Optimizer/scheduler/RNG/data state. weights_only=True: a pickled payload is refused, not run."""
    read_marker(ckpt_dir)
    try:
        return torch.load(os.path.join(ckpt_dir, STATE), map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for code payloads, RuntimeError for corrupt zips
        raise CheckpointError(f"refusing {ckpt_dir}/{STATE}: not a plain tensor/number file "
                              f"({type(err).__name__}); it may be corrupt or tampered with") from None


def find_latest(run_dir: str) -> Optional[str]:
    """The newest complete checkpoint under run_dir, found on storage whether or not Ray registered it."""
    if not os.path.isdir(run_dir):
        return None
    steps = sorted(((int(m.group(1)), name) for name in os.listdir(run_dir) if (m := _DIR_PATTERN.match(name))),
                   reverse=True)
    for _, name in steps:
        try:
            read_marker(os.path.join(run_dir, name))
            return os.path.join(run_dir, name)
        except CheckpointError:
            continue  # a half-written checkpoint: fall back to the one before it
    return None


def choose_resume_dir(ray_checkpoint_dir: Optional[str], run_dir: Optional[str]) -> Optional[str]:
    """Pick the newer of Ray's registered checkpoint and the newest complete one on storage.

    Ray registers a checkpoint only after the report round-trips (~2 s); a worker that dies in that
    window leaves a complete checkpoint on storage that Ray does not know. We resume from it.
    """
    candidates = []
    if ray_checkpoint_dir is not None:
        try:
            candidates.append((read_marker(ray_checkpoint_dir)["step"], ray_checkpoint_dir))
        except CheckpointError:
            pass
    if run_dir is not None:
        found = find_latest(run_dir)
        if found is not None:
            candidates.append((read_marker(found)["step"], found))
    return max(candidates)[1] if candidates else None
