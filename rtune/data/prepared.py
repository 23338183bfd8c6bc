"""What both data engines share: the prepared data's description, its cache key, and the one step that turns
records into saved rows (encode -> fit -> pack -> save).

The `datasets` engine (`datasets_engine.py`) runs the step once per split on the driver; the `ray` engine
(`ray_tasks.PackFiles`) runs it once per corpus file and split in a pool of actors. Both call the functions
below, so they drop, truncate and pack samples by the same rules. Light on purpose (no torch, no transformers):
the ray engine's tokenizer actors import it, and start in a fraction of a second.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rtune.config import DataConfig, RTuneConfig
from rtune.data.formats import encode_preference, encode_record
from rtune.data.packing import Rows, pack
from rtune.errors import UserError
from rtune.tokens import IGNORE

CHAT_FORMATS = ("chat", "instruction", "preference")  # formats rendered with a chat template
PAIR_COLUMNS = ("chosen_ids", "chosen_labels", "rejected_ids", "rejected_labels")
Columns = Dict[str, List[Any]]  # encoded samples: input_ids (+ labels), or the four PAIR_COLUMNS
Stats = Dict[str, int]


@dataclass
class PreparedData:
    """Where the packed rows are and what they hold."""

    train_path: str
    val_path: str
    tokenizer_dir: str
    train_documents: int  # records that became training samples
    val_documents: int
    train_tokens: int  # non-padding tokens in the rows
    val_tokens: int
    train_blocks: int  # rows of seq_len tokens
    val_blocks: int
    seq_len: int
    packing: str = "concat"
    train_target_tokens: int = 0  # tokens that carry the loss
    val_target_tokens: int = 0
    skipped_no_reply: int = 0  # records with nothing to train on (no assistant turn), both splits
    dropped_too_long: int = 0  # samples longer than seq_len, dropped (data.truncation=drop)
    truncated: int = 0  # samples cut to seq_len (data.truncation=truncate)
    skipped_identical: int = 0  # preference pairs whose chosen and rejected replies are the same
    end_of_turn: Optional[str] = None  # the template's end-of-turn token (chat formats)

    @property
    def train_fill(self) -> float:
        """Non-padding share of the training rows (packing efficiency)."""
        return self.train_tokens / (self.train_blocks * self.seq_len)

    def to_dict(self) -> dict:
        return asdict(self)


def data_key(*parts: object) -> str:
    """The cache key of anything derived from `parts` (their text, joined): 16 hex digits of a SHA-256."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def packing_of(cfg: RTuneConfig) -> str:
    """`data.packing`, or the format's default: concat for raw text, isolated for everything else."""
    return cfg.data.packing or ("concat" if cfg.data.format == "text" else "isolated")


def split_documents(n_documents: int, val_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, val) record indices; at least one of each, chosen by a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(n_documents)
    n_val = min(n_documents - 1, max(1, round(n_documents * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# ---- the step: encode -> fit -> pack -> save ----------------------------------------------------------------

def encode_records(records: Sequence[Dict[str, Any]], where: Sequence[str], tokenizer, d: DataConfig) -> Columns:
    """Records -> columns (`where[i]` names record i in errors). A record with nothing to train on (no
    assistant turn, identical preference replies) gives empty lists, which the fit step counts and drops."""
    if d.format == "preference":
        out: Columns = {k: [] for k in PAIR_COLUMNS}
        for record, place in zip(records, where):
            pair = encode_preference(record, tokenizer, place)
            (c_ids, c_labels), (r_ids, r_labels) = pair if pair is not None else (([], []), ([], []))
            for key, value in zip(PAIR_COLUMNS, (c_ids, c_labels, r_ids, r_labels)):
                out[key].append(value)
        return out
    out = {"input_ids": [], "labels": []}
    for record, place in zip(records, where):
        sample = encode_record(record, d.format, tokenizer, d.text_field, d.messages_field, d.train_on, place)
        ids, labels = sample if sample is not None else ([], [])
        out["input_ids"].append(ids)
        out["labels"].append(labels)
    return out


def _fit_to_length(ids: Sequence[List[int]], labels: Optional[Sequence[List[int]]], seq_len: int, truncation: str
                   ) -> Tuple[List[List[int]], Optional[List[List[int]]], Stats]:
    """Drop empty samples; drop or truncate those longer than seq_len (a truncated one keeps >= 1 target)."""
    kept_ids, kept_labels = [], [] if labels is not None else None
    stats = {"skipped_no_reply": 0, "dropped_too_long": 0, "truncated": 0}
    for i, sample in enumerate(ids):
        sample_labels = labels[i] if labels is not None else None
        if not sample:
            stats["skipped_no_reply"] += 1
            continue
        if len(sample) > seq_len:
            if truncation == "drop":
                stats["dropped_too_long"] += 1
                continue
            sample = sample[:seq_len]
            if sample_labels is not None:
                sample_labels = sample_labels[:seq_len]
                if all(t == IGNORE for t in sample_labels[1:]):  # nothing left to learn from it
                    stats["dropped_too_long"] += 1
                    continue
            stats["truncated"] += 1
        kept_ids.append(sample)
        if kept_labels is not None:
            kept_labels.append(sample_labels)
    return kept_ids, kept_labels, stats


def fit_samples(ids: Sequence[List[int]], labels: Optional[Sequence[List[int]]], cfg: RTuneConfig
                ) -> Tuple[List[List[int]], Optional[List[List[int]]], Stats]:
    """The samples that go into rows: empty ones left out; with whole-sample packing, the too long dropped or
    truncated (concat is a stream: long samples simply continue in the next row)."""
    if packing_of(cfg) != "concat":
        return _fit_to_length(ids, labels, cfg.data.seq_len, cfg.data.truncation)
    stats = {"skipped_no_reply": sum(1 for s in ids if not s), "dropped_too_long": 0, "truncated": 0}
    keep = [i for i, s in enumerate(ids) if s]
    return [ids[i] for i in keep], ([labels[i] for i in keep] if labels is not None else None), stats


def fit_pairs(encoded: Columns, seq_len: int, truncation: str):
    """Interleaved samples [chosen 0, rejected 0, chosen 1, ...] and their groups; a pair shares one row,
    so it must fit seq_len as a whole (truncate: each reply's sample cut to half a row)."""
    ids: List[List[int]] = []
    labels: List[List[int]] = []
    stats = {"skipped_identical": 0, "dropped_too_long": 0, "truncated": 0}
    for c_ids, c_labels, r_ids, r_labels in zip(*(encoded[k] for k in PAIR_COLUMNS)):
        if not c_ids:
            stats["skipped_identical"] += 1
            continue
        if len(c_ids) + len(r_ids) > seq_len:
            half = seq_len // 2
            c_ids, c_labels, r_ids, r_labels = c_ids[:half], c_labels[:half], r_ids[:half], r_labels[:half]
            if truncation == "drop" or all(t == IGNORE for t in c_labels[1:]) or all(t == IGNORE for t in r_labels[1:]):
                stats["dropped_too_long"] += 1
                continue
            stats["truncated"] += 1
        ids += [c_ids, r_ids]
        labels += [c_labels, r_labels]
    groups = [[i, i + 1] for i in range(0, len(ids), 2)]
    return ids, labels, groups, stats


def pack_and_save(encoded: Columns, cfg: RTuneConfig, save: Callable[[Rows, Stats], Stats]
                  ) -> Tuple[Optional[Stats], Stats]:
    """Fit the encoded samples to seq_len, pack them into rows and `save(rows, stats)` them.

    Returns (the saved rows' counts, or None when no sample is left; what fitting dropped or truncated)."""
    d, packing = cfg.data, packing_of(cfg)
    if d.format == "preference":
        ids, labels, groups, stats = fit_pairs(encoded, d.seq_len, d.truncation)
        if not ids:
            return None, stats
        rows = pack(ids, labels, d.seq_len, packing, groups=groups)
        rows.samples = len(groups)
        return save(rows, stats), stats
    labels = encoded.get("labels")
    ids, labels, stats = fit_samples(encoded["input_ids"], labels if labels is not None and d.format != "text"
                                     else None, cfg)
    if not ids:
        return None, stats
    return save(pack(ids, labels, d.seq_len, packing), stats), stats


def nothing_left(split: str, source: str, stats: Stats, cfg: RTuneConfig) -> UserError:
    """The error for a split that fitting emptied, naming why its samples went and the fix."""
    if cfg.data.format == "preference":
        return UserError(f"no {split} pairs left in {source}: {stats.get('skipped_identical', 0)} had identical "
                         f"replies and {stats.get('dropped_too_long', 0)} were longer than data.seq_len="
                         f"{cfg.data.seq_len} tokens: raise data.seq_len or set data.truncation=truncate")
    phrases = {"skipped_no_reply": "had no assistant reply",
               "dropped_too_long": f"were longer than {cfg.data.seq_len} tokens"}
    reasons = ", ".join(f"{stats[k]} {phrase}" for k, phrase in phrases.items() if stats.get(k))
    hint = "raise data.seq_len or set data.truncation=truncate" if stats.get("dropped_too_long") else \
        "check data.format and data.train_on"
    return UserError(f"no {split} samples left in {source}: all {reasons}: {hint}")
