"""data.format=prompt: the prompts online RL samples completions for, with the columns its rewards read.

The records are checked (a `prompt`, a non-empty string or message list; the columns each built-in reward needs),
split by record into train and held-out prompts (or `data.eval_path` for the latter) with the same seeded split
as every other format, and written as two JSON-lines files in the cache, keyed by content, which every worker
reads. Workers encode the prompts themselves (a few tokens each): there is nothing to pack.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import numpy as np

from rtune.config import RTuneConfig
from rtune.data.datasets_engine import tokenizer_for
from rtune.data.prepared import PreparedData, data_key, split_documents
from rtune.data.sources import load_records
from rtune.errors import UserError
from rtune.model import tokenizer_fingerprint

# The columns a built-in reward reads besides the prompt (a user's function names its own).
REWARD_COLUMNS = {"rust_tests": ("test",), "exact_match": ("answer",), "regex": ("pattern",)}


def check_prompt_record(record: Dict[str, Any], where: str, rewards: List[str]) -> None:
    prompt = record.get("prompt")
    if not prompt or not isinstance(prompt, (str, list)):
        raise UserError(f"{where}: field 'prompt' must be a non-empty string or a list of {{role, content}} messages")
    for reward in rewards:
        for column in REWARD_COLUMNS.get(reward, ()):
            if record.get(column) is None:
                raise UserError(f"{where}: reward {reward} reads field {column!r}, which this record lacks: add it "
                                f"to every record, or choose another reward")


def _write(path: str, records: List[Dict[str, Any]]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def read_prompt_records(path: str) -> List[Dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def prepare_prompts(cfg: RTuneConfig):
    """Check, split and cache the prompt records; returns (PreparedData, tokenizer)."""
    d = cfg.data
    records = load_records(d, min_records=1 if d.eval_path else 2)
    records_fp = data_key(records._fingerprint)
    if d.eval_path:
        eval_records = load_records(d, d.eval_path, min_records=1)
        train_idx, val_idx = np.arange(len(records)), np.arange(len(eval_records))
    else:
        eval_records = records
        train_idx, val_idx = split_documents(len(records), d.val_fraction, cfg.seed)
    tokenizer = tokenizer_for(cfg, records, train_idx, records_fp)
    tok_fp = tokenizer_fingerprint(tokenizer)
    tokenizer_dir = os.path.join(d.cache_dir, "tokenizers", f"saved-{tok_fp}")
    if not os.path.isdir(tokenizer_dir):
        tokenizer.save_pretrained(tokenizer_dir)
    paths = {}
    for split, recs, idx, source in (("train", records, train_idx, d.path),
                                     ("val", eval_records, val_idx, d.eval_path or d.path)):
        key = data_key(recs._fingerprint, split, data_key(*idx.tolist()), "prompts-v1")
        path = os.path.join(d.cache_dir, "prompts", f"{key}.jsonl")
        rows = recs.select(idx).to_list()
        for i, row in zip(idx, rows):  # every run: its rewards may read other columns than the cached run's
            check_prompt_record(row, f"{source} record {int(i)}", cfg.rewards)
        if not os.path.exists(path):
            _write(path, rows)
        paths[split] = path
    prepared = PreparedData(paths["train"], paths["val"], tokenizer_dir, len(train_idx), len(val_idx), 0, 0,
                            len(train_idx), len(val_idx), d.seq_len, packing="none")
    return prepared, tokenizer
