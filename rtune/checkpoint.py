"""What a checkpoint holds, how rank 0 writes it, and how a run finds the one to resume from.

A checkpoint directory is a Hugging Face model directory plus resume state, and nothing executable:

    model.safetensors, config.json, generation_config.json   AutoModelForCausalLM.from_pretrained(dir)
    tokenizer.json, tokenizer_config.json, ...              AutoTokenizer.from_pretrained(dir)
    trainer_state.pt     optimizer, scheduler, data position, step (weights_only=True; written around the
                         page cache, rtune.direct_io)
    fsdp_shards/         FSDP with sharded state: every rank's slices of weights and optimizer state; the
                         HF model files are then only in the last checkpoint (config.json in every one)
    rtune_config.json    the resolved config of the run
    rtune_checkpoint.json   written LAST: step, metrics and the size of every other file

The marker makes completeness checkable: a directory whose marker is missing, or whose files do not
match the sizes it lists, was cut short (a crash mid-write or mid-upload) and is never resumed from.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch.utils.serialization import config as torch_serialization_config

from rtune.direct_io import direct_writer
from rtune.errors import UserError

MARKER = "rtune_checkpoint.json"
STATE = "trainer_state.pt"
CONFIG = "rtune_config.json"
FORMAT_VERSION = 1
_DIR_PATTERN = re.compile(r"^checkpoint_(\d+)$")


def dir_name(step: int) -> str:
    """Checkpoint directory name: sortable by step, so the newest is easy to find on storage."""
    return f"checkpoint_{step:08d}"


def list_files(root: str) -> Dict[str, int]:
    """Every file under root (relative path -> size), the marker excepted."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            rel = os.path.relpath(os.path.join(directory, name), root)
            if rel != MARKER and not name.startswith("."):
                files[rel] = os.path.getsize(os.path.join(directory, name))
    return dict(sorted(files.items()))


def has_model_weights(model_dir: str) -> bool:
    """Whether a directory holds Hugging Face model weights (a sharded FSDP checkpoint may hold only its shards)."""
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    return any(os.path.exists(os.path.join(model_dir, name)) for name in names)


def write_rank0_files(out_dir: str, tokenizer, trainer_state: Dict[str, Any], config: Dict[str, Any]) -> None:
    """What rank 0 adds to every checkpoint beside the weights: tokenizer, resume state, config."""
    os.makedirs(out_dir, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    # No CRC-32 per record: torch.load never checks it (a flipped payload byte loads), and for the ~700 MB of
    # AdamW state of an 87M model it cost ~0.45 s of CPU per checkpoint; the marker's sizes guard completeness.
    # Around the page cache (rtune.direct_io): the file is on disk, and no cache was filled, when this returns.
    with torch_serialization_config.patch({"save.compute_crc32": False}), \
            direct_writer(os.path.join(out_dir, STATE)) as f:
        torch.save(trainer_state, f)
    with open(os.path.join(out_dir, CONFIG), "w") as f:
        json.dump(config, f, indent=2)


def write_marker(out_dir: str, step: int, metrics: Dict[str, Any], files: Dict[str, int]) -> None:
    """Written last, listing every rank's files: a checkpoint is complete once all of them are there."""
    marker = {"format": FORMAT_VERSION, "step": step, "metrics": metrics, "files": files}
    tmp = os.path.join(out_dir, f".{MARKER}.tmp")
    with open(tmp, "w") as f:
        json.dump(marker, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, MARKER))


def save(out_dir: str, model, tokenizer, trainer_state: Dict[str, Any], config: Dict[str, Any],
         metrics: Dict[str, Any]) -> None:
    """A complete single-process checkpoint (the multi-rank path lives in the loop)."""
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    write_rank0_files(out_dir, tokenizer, trainer_state, config)
    write_marker(out_dir, trainer_state["step"], metrics, list_files(out_dir))


def read_marker(ckpt_dir: str) -> Dict[str, Any]:
    """The marker of a complete checkpoint; UserError if absent or if files do not match it."""
    path = os.path.join(ckpt_dir, MARKER)
    if not os.path.isdir(ckpt_dir):
        raise UserError(f"checkpoint {ckpt_dir} does not exist")
    if not os.path.isfile(path):
        raise UserError(f"{ckpt_dir} is not a complete rtune checkpoint (no {MARKER})")
    try:
        with open(path) as f:
            marker = json.load(f)
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{ckpt_dir}: {MARKER} is unreadable") from None
    for name, size in files.items():
        full = os.path.join(ckpt_dir, name)
        if not os.path.isfile(full) or os.path.getsize(full) != size:
            raise UserError(f"checkpoint {ckpt_dir} is incomplete or damaged: {name} is missing or truncated")
        if name.endswith(".safetensors"):
            _check_safetensors(full)
    return marker


def _check_safetensors(path: str) -> None:
    """Parse the header (cheap: no tensor data is read); a corrupt file fails here, not mid-resume."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            f.keys()
    except Exception as err:
        raise UserError(f"checkpoint file {path} is corrupt ({str(err).splitlines()[0][:120]})") from None


def load_trainer_state(ckpt_dir: str, mmap: bool = False) -> Dict[str, Any]:
    """Optimizer/scheduler/RNG/data state. weights_only=True: a pickled payload is refused, not run.

    mmap=True checks the file without reading tensor data into memory (the driver's preflight).
    """
    read_marker(ckpt_dir)
    try:
        return torch.load(os.path.join(ckpt_dir, STATE), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # UnpicklingError for code payloads, RuntimeError for corrupt zips
        raise UserError(f"refusing {ckpt_dir}/{STATE}: not a plain tensor/number file "
                        f"({type(err).__name__}); it may be corrupt or tampered with") from None


def scan(run_dir: str) -> Tuple[Optional[str], List[str]]:
    """(newest intact checkpoint under run_dir or None, reasons for each newer one that was skipped).

    Found on storage whether or not Ray registered it. A half-written checkpoint (a crash mid-write or
    mid-upload) is skipped in favour of the one before it; it is left in place, never deleted.
    """
    if not os.path.isdir(run_dir):
        return None, []
    steps = sorted(((int(m.group(1)), name) for name in os.listdir(run_dir) if (m := _DIR_PATTERN.match(name))),
                   reverse=True)
    skipped = []
    for _, name in steps:
        try:
            read_marker(os.path.join(run_dir, name))
            return os.path.join(run_dir, name), skipped
        except UserError as err:
            skipped.append(str(err))
    return None, skipped


def list_checkpoints(run_dir: str) -> List[Tuple[int, str]]:
    """(step, path) of every intact checkpoint under run_dir, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    found = []
    for name in sorted(os.listdir(run_dir)):
        if (m := _DIR_PATTERN.match(name)):
            try:
                read_marker(os.path.join(run_dir, name))
                found.append((int(m.group(1)), os.path.join(run_dir, name)))
            except UserError:
                continue
    return found


def find_latest(run_dir: str) -> Optional[str]:
    """The newest intact checkpoint under run_dir (see `scan`)."""
    return scan(run_dir)[0]


def load_config(ckpt_dir: str) -> Dict[str, Any]:
    """The resolved config a checkpoint was written with."""
    with open(os.path.join(ckpt_dir, CONFIG)) as f:
        return json.load(f)


# What must not change when a run resumes: the weights, tokens and blocks depend on them.
_RESUME_INVARIANTS = ("model.name_or_path", "model.from_config", "model.tokenizer", "model.tokenizer_vocab_size",
                      "data.path", "data.data_dir", "data.text_field", "data.seq_len", "data.val_fraction",
                      "data.max_documents", "seed", "peft.method", "peft.r", "peft.target_modules",
                      "strategy.name", "strategy.zero_stage")


def _get(tree: Dict[str, Any], dotted: str):
    for part in dotted.split("."):
        tree = tree.get(part, {}) if isinstance(tree, dict) else {}
    return tree


def check_compatible(ckpt_dir: str, current: Dict[str, Any]) -> None:
    """Refuse to resume a run with settings that would silently change what it trains."""
    saved = load_config(ckpt_dir)
    for key in _RESUME_INVARIANTS:
        before, now = _get(saved, key), _get(current, key)
        if before != now:
            raise UserError(
                f"run {current.get('run_name')} was trained with {key}={before!r}, now {now!r}: resume with the same "
                f"setting, or start a new run_name (model.name_or_path={ckpt_dir} fine-tunes from this checkpoint)")
    if _get(current, "strategy.name") == "deepspeed" and saved.get("num_workers") != current.get("num_workers"):
        raise UserError(
            f"run {current.get('run_name')} was trained by {saved.get('num_workers')} DeepSpeed workers, now "
            f"{current.get('num_workers')}: ZeRO checkpoints are partitioned per worker, so resume with "
            f"num_workers={saved.get('num_workers')} (ddp and fsdp runs may resume with any count)")


def choose_resume_dir(ray_checkpoint_dir: Optional[str], run_dir: Optional[str]) -> Optional[str]:
    """Pick the newer of Ray's registered checkpoint and the newest complete one on storage.

    Ray registers a checkpoint only after the report round-trips (~2 s); a worker that dies in that
    window leaves a complete checkpoint on storage that Ray does not know. We resume from it.
    """
    candidates = []
    if ray_checkpoint_dir is not None:
        try:
            candidates.append((read_marker(ray_checkpoint_dir)["step"], ray_checkpoint_dir))
        except UserError:
            pass
    if run_dir is not None:
        found = find_latest(run_dir)
        if found is not None:
            candidates.append((read_marker(found)["step"], found))
    return max(candidates)[1] if candidates else None
