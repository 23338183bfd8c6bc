"""Records -> samples -> packed rows, cached on disk so workers and re-runs do not redo it.

The pipeline, run once on the driver (and again, hitting the cache, on any node that lacks it):

1. load the records (`sources.py`) and check the fields their format needs;
2. split by *record* into train and validation (or read `data.eval_path` as the validation set and
   hold nothing out), so no validation text is ever trained on;
3. the tokenizer: the model's own, or a byte-level BPE trained on the training records; chat formats
   give it a chat template (`templates.py`);
4. encode every record into `(input_ids, labels)` (`formats.py`) with a cached `datasets.map`, keyed by
   the data's, the tokenizer's and the format settings' fingerprints;
5. drop or truncate samples longer than `seq_len` (isolated / none packing), pack them into rows
   (`packing.py`) and save the rows (`rows.py`), which workers memory-map.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from rtune.config import ConfigError, RTuneConfig
from rtune.data.formats import IGNORE, encode_preference, encode_record, record_texts
from rtune.data.packing import pack
from rtune.data.rows import load_meta, save_rows
from rtune.data.sources import load_records

CHAT_FORMATS = ("chat", "instruction", "preference")  # formats rendered with a chat template
PAIR_COLUMNS = ("chosen_ids", "chosen_labels", "rejected_ids", "rejected_labels")


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


def packing_of(cfg: RTuneConfig) -> str:
    """`data.packing`, or the format's default: concat for raw text, isolated for everything else."""
    return cfg.data.packing or ("concat" if cfg.data.format == "text" else "isolated")


def _key(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def split_documents(n_documents: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, val) record indices; at least one of each, chosen by a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(n_documents)
    n_val = min(n_documents - 1, max(1, round(n_documents * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def get_tokenizer(cfg: RTuneConfig, records, train_idx: np.ndarray, records_fp: str):
    """The model's own tokenizer, or a BPE trained on the training records (cached by content),
    with the chat template the format needs."""
    from rtune.data.templates import apply_template
    from rtune.model import load_tokenizer_from, train_bpe_tokenizer

    m, d = cfg.model, cfg.data
    if m.tokenizer or m.name_or_path:
        tokenizer = load_tokenizer_from(m.tokenizer or m.name_or_path, m.trust_remote_code, m.revision)
    else:
        key = _key(records_fp, _key(*train_idx.tolist()), m.tokenizer_vocab_size, "bpe-v1")
        out_dir = os.path.join(d.cache_dir, "tokenizers", key)
        if os.path.isdir(out_dir):
            tokenizer = load_tokenizer_from(out_dir, trust_remote_code=False)
        else:
            train_records = records.select(train_idx)

            def texts():
                for start in range(0, len(train_records), 256):
                    batch = train_records[start:start + 256]
                    rows = [{k: batch[k][j] for k in batch} for j in range(len(next(iter(batch.values()))))]
                    yield [t for r in rows for t in record_texts(r, d.format, d.text_field, d.messages_field)]

            tokenizer = train_bpe_tokenizer((t for chunk in texts() for t in chunk), m.tokenizer_vocab_size, out_dir)
    if d.format in CHAT_FORMATS:
        apply_template(tokenizer, d.chat_template)
    return tokenizer


def _encode_split(records, indices: np.ndarray, split: str, source: str, tokenizer, tok_fp: str, records_fp: str,
                  cfg: RTuneConfig):
    """Every record of one split as (input_ids[, labels]) with a cached `datasets.map`."""
    d = cfg.data
    key = _key(records_fp, split, _key(*indices.tolist()), tok_fp, d.format, d.text_field, d.messages_field,
               d.train_on, "encode-v2")
    os.makedirs(os.path.join(d.cache_dir, "tokenized"), exist_ok=True)
    cache_file = os.path.join(d.cache_dir, "tokenized", f"{key}.arrow")
    subset = records.select(indices)
    if d.format == "text":  # the fast path: the Rust tokenizer, batched; every token trains
        backend, eos = tokenizer.backend_tokenizer, tokenizer.eos_token_id

        def encode_text(batch):
            encoded = backend.encode_batch_fast(batch[d.text_field], add_special_tokens=False)  # no offsets
            return {"input_ids": [e.ids + [eos] for e in encoded]}

        return subset.map(encode_text, batched=True, remove_columns=subset.column_names, new_fingerprint=key,
                          cache_file_name=cache_file, desc=f"tokenize {split}"), key

    if d.format == "preference":
        def encode_pairs(batch, positions):
            out: Dict[str, List[Any]] = {k: [] for k in PAIR_COLUMNS}
            for j, position in enumerate(positions):
                record = {k: batch[k][j] for k in batch}
                pair = encode_preference(record, tokenizer, f"{source} record {int(indices[position])}")
                (c_ids, c_labels), (r_ids, r_labels) = pair if pair is not None else (([], []), ([], []))
                for key, value in zip(PAIR_COLUMNS, (c_ids, c_labels, r_ids, r_labels)):
                    out[key].append(value)
            return out

        return subset.map(encode_pairs, batched=True, with_indices=True, remove_columns=subset.column_names,
                          new_fingerprint=key, cache_file_name=cache_file, desc=f"encode {split}"), key

    def encode(batch, positions):
        out: Dict[str, List[Any]] = {"input_ids": [], "labels": []}
        for j, position in enumerate(positions):
            record = {k: batch[k][j] for k in batch}
            where = f"{source} record {int(indices[position])}"
            sample = encode_record(record, d.format, tokenizer, d.text_field, d.messages_field, d.train_on, where)
            ids, labels = sample if sample is not None else ([], [])
            out["input_ids"].append(ids)
            out["labels"].append(labels)
        return out

    return subset.map(encode, batched=True, with_indices=True, remove_columns=subset.column_names,
                      new_fingerprint=key, cache_file_name=cache_file, desc=f"encode {split}"), key


def _fit_to_length(ids: List[List[int]], labels: Optional[List[List[int]]], seq_len: int, truncation: str
                   ) -> Tuple[List[List[int]], Optional[List[List[int]]], Dict[str, int]]:
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


def fit_samples(ids: List[List[int]], labels: Optional[List[List[int]]], cfg: RTuneConfig
                ) -> Tuple[List[List[int]], Optional[List[List[int]]], Dict[str, int]]:
    """The samples that go into rows: empty ones left out; with whole-sample packing, the too long dropped or
    truncated (concat is a stream: long samples simply continue in the next row)."""
    if packing_of(cfg) != "concat":
        return _fit_to_length(ids, labels, cfg.data.seq_len, cfg.data.truncation)
    stats = {"skipped_no_reply": sum(1 for s in ids if not s), "dropped_too_long": 0, "truncated": 0}
    keep = [i for i, s in enumerate(ids) if s]
    return [ids[i] for i in keep], ([labels[i] for i in keep] if labels is not None else None), stats


def no_samples_left(split: str, source: str, stats: Dict[str, int], cfg: RTuneConfig) -> ConfigError:
    phrases = {"skipped_no_reply": "had no assistant reply",
               "dropped_too_long": f"were longer than {cfg.data.seq_len} tokens"}
    reasons = ", ".join(f"{stats[k]} {phrase}" for k, phrase in phrases.items() if stats[k])
    hint = "raise data.seq_len or set data.truncation=truncate" if stats["dropped_too_long"] else \
        "check data.format and data.train_on"
    return ConfigError(f"no {split} samples left in {source}: all {reasons}: {hint}")


def no_pairs_left(split: str, source: str, stats: Dict[str, int], cfg: RTuneConfig) -> ConfigError:
    return ConfigError(f"no {split} pairs left in {source}: {stats['skipped_identical']} had identical replies "
                       f"and {stats['dropped_too_long']} were longer than data.seq_len={cfg.data.seq_len} tokens: "
                       "raise data.seq_len or set data.truncation=truncate")


def fit_pairs(encoded, seq_len: int, truncation: str):
    """Interleaved samples [chosen 0, rejected 0, chosen 1, ...] and their groups; a pair shares one row,
    so it must fit seq_len as a whole (truncate: each reply's sample cut to half a row)."""
    ids: List[List[int]] = []
    labels: List[List[int]] = []
    stats = {"skipped_identical": 0, "dropped_too_long": 0, "truncated": 0}
    columns = [encoded[k] for k in PAIR_COLUMNS]
    for c_ids, c_labels, r_ids, r_labels in zip(*columns):
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


def _pack_split(encoded, key: str, split: str, source: str, cfg: RTuneConfig) -> Tuple[str, Dict[str, int]]:
    """Pack one encoded split into rows (cached); returns (rows directory, its counts)."""
    d, packing = cfg.data, packing_of(cfg)
    out = os.path.join(d.cache_dir, "packed", f"{_key(key, packing, d.seq_len, d.truncation, 'rows-v1')}")
    if os.path.exists(out):
        return out, load_meta(out)
    if d.format == "preference":
        ids, labels, groups, stats = fit_pairs(encoded, d.seq_len, d.truncation)
        if not ids:
            raise no_pairs_left(split, source, stats, cfg)
        rows = pack(ids, labels, d.seq_len, packing, groups=groups)
        rows.samples = len(groups)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        return out, save_rows(out, rows, stats)
    ids = encoded["input_ids"]
    labels = encoded["labels"] if "labels" in encoded.column_names else None
    ids, labels, stats = fit_samples(ids, labels, cfg)
    if not ids:
        raise no_samples_left(split, source, stats, cfg)
    rows = pack(ids, labels, d.seq_len, packing)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    return out, save_rows(out, rows, stats)


def prepare_data(cfg: RTuneConfig):
    """Run the whole pipeline (cache hits are cheap); returns (PreparedData, tokenizer)."""
    d = cfg.data
    if d.engine == "ray":  # the cluster tokenizes; the driver only plans
        from rtune.data.ray_engine import prepare_with_ray

        return prepare_with_ray(cfg)
    from rtune.data.templates import end_of_turn
    from rtune.model import tokenizer_fingerprint

    records = load_records(d, min_records=1 if d.eval_path else 2)
    records_fp = _key(records._fingerprint, d.text_field)
    if d.eval_path:
        eval_records = load_records(d, d.eval_path, min_records=1)
        train_idx, val_idx = np.arange(len(records)), np.arange(len(eval_records))
    else:
        eval_records = records
        train_idx, val_idx = split_documents(len(records), d.val_fraction, cfg.seed)
    tokenizer = get_tokenizer(cfg, records, train_idx, records_fp)
    tok_fp = tokenizer_fingerprint(tokenizer)
    tokenizer_dir = os.path.join(d.cache_dir, "tokenizers", f"saved-{tok_fp}")
    if not os.path.isdir(tokenizer_dir):
        tokenizer.save_pretrained(tokenizer_dir)  # workers load this copy: no hub round-trips
    splits = {}
    for split, recs, idx, source in (("train", records, train_idx, d.path),
                                     ("val", eval_records, val_idx, d.eval_path or d.path)):
        fp = records_fp if recs is records else _key(recs._fingerprint, d.text_field)
        encoded, key = _encode_split(recs, idx, split, source, tokenizer, tok_fp, fp, cfg)
        splits[split] = _pack_split(encoded, key, split, source, cfg)
    (train_path, train), (val_path, val) = splits["train"], splits["val"]
    prepared = PreparedData(
        train_path, val_path, tokenizer_dir, train["samples"], val["samples"], train["tokens"], val["tokens"],
        train["rows"], val["rows"], d.seq_len, packing=packing_of(cfg), train_target_tokens=train["target_tokens"],
        val_target_tokens=val["target_tokens"],
        **{k: train.get(k, 0) + val.get(k, 0) for k in ("skipped_no_reply", "dropped_too_long", "truncated",
                                                         "skipped_identical")},
        end_of_turn=end_of_turn(tokenizer) if d.format in CHAT_FORMATS else None)
    return prepared, tokenizer
