"""data.engine=datasets: the driver prepares the data in one process, cached on its disk by content.

1. load the records (`sources.py`) and check the fields their format needs;
2. split by *record* into train and validation (or read `data.eval_path` as the validation set and hold
   nothing out), so no validation text is ever trained on;
3. the tokenizer: the model's own, or a byte-level BPE trained on the training records (cached); chat
   formats give it a chat template (`templates.py`);
4. encode every record (`prepared.encode_records`; raw text through the Rust tokenizer in batches) with a
   cached `datasets.map`, keyed by the data's, the tokenizer's and the format settings' fingerprints;
5. fit, pack and save each split's rows (`prepared.pack_and_save`), which workers memory-map.
"""

from __future__ import annotations

import os
from typing import Dict, Tuple

import numpy as np

from rtune.config import RTuneConfig
from rtune.data.formats import record_texts
from rtune.data.prepared import (CHAT_FORMATS, PreparedData, data_key, encode_records, nothing_left, pack_and_save,
                                 packing_of, split_documents)
from rtune.data.rows import load_meta, save_rows
from rtune.data.sources import load_records
from rtune.data.templates import end_of_turn
from rtune.data.tokenizer import model_tokenizer, with_template
from rtune.model import load_tokenizer_from, tokenizer_fingerprint, train_bpe_tokenizer

BPE_BATCH_RECORDS = 256  # records read at a time while the BPE trains


def tokenizer_for(cfg: RTuneConfig, records, train_idx: np.ndarray, records_fp: str):
    """The model's own tokenizer, or a BPE trained on the training records (cached by content)."""
    tokenizer = model_tokenizer(cfg)
    if tokenizer is not None:
        return tokenizer
    m, d = cfg.model, cfg.data
    key = data_key(records_fp, data_key(*train_idx.tolist()), m.tokenizer_vocab_size, "bpe-v1")
    out_dir = os.path.join(d.cache_dir, "tokenizers", key)
    if os.path.isdir(out_dir):
        return with_template(load_tokenizer_from(out_dir, trust_remote_code=False), d)
    train_records = records.select(train_idx)

    def texts():
        for start in range(0, len(train_records), BPE_BATCH_RECORDS):
            batch = train_records[start:start + BPE_BATCH_RECORDS]
            for j in range(len(next(iter(batch.values())))):
                yield from record_texts({k: batch[k][j] for k in batch}, d.format, d.text_field, d.messages_field)

    return with_template(train_bpe_tokenizer(texts(), m.tokenizer_vocab_size, out_dir), d)


def _encode_split(records, indices: np.ndarray, split: str, source: str, tokenizer, tok_fp: str, records_fp: str,
                  cfg: RTuneConfig):
    """Every record of one split encoded, with a cached `datasets.map`; returns (columns, cache key)."""
    d = cfg.data
    key = data_key(records_fp, split, data_key(*indices.tolist()), tok_fp, d.format, d.text_field, d.messages_field,
                   d.train_on, "encode-v2")
    os.makedirs(os.path.join(d.cache_dir, "tokenized"), exist_ok=True)
    cache = {"new_fingerprint": key, "cache_file_name": os.path.join(d.cache_dir, "tokenized", f"{key}.arrow")}
    subset = records.select(indices)
    if d.format == "text":  # the fast path: the Rust tokenizer, batched; every token trains
        backend, eos = tokenizer.backend_tokenizer, tokenizer.eos_token_id

        def encode_text(batch):
            encoded = backend.encode_batch_fast(batch[d.text_field], add_special_tokens=False)  # no offsets
            return {"input_ids": [e.ids + [eos] for e in encoded]}

        encoded = subset.map(encode_text, batched=True, remove_columns=subset.column_names, desc=f"tokenize {split}",
                             **cache)
    else:
        def encode(batch, positions):
            rows = [{k: batch[k][j] for k in batch} for j in range(len(positions))]
            return encode_records(rows, [f"{source} record {int(indices[p])}" for p in positions], tokenizer, d)

        encoded = subset.map(encode, batched=True, with_indices=True, remove_columns=subset.column_names,
                             desc=f"encode {split}", **cache)
    return {name: encoded[name] for name in encoded.column_names}, key


def _rows(encoded, key: str, split: str, source: str, cfg: RTuneConfig) -> Tuple[str, Dict[str, int]]:
    """One split's rows (cached): (rows directory, its counts)."""
    d = cfg.data
    out = os.path.join(d.cache_dir, "packed", data_key(key, packing_of(cfg), d.seq_len, d.truncation, "rows-v1"))
    if os.path.exists(out):
        return out, load_meta(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    meta, stats = pack_and_save(encoded, cfg, lambda rows, stats: save_rows(out, rows, stats))
    if meta is None:
        raise nothing_left(split, source, stats, cfg)
    return out, meta


def prepare_with_datasets(cfg: RTuneConfig):
    """Run the whole pipeline on this process (cache hits are cheap); returns (PreparedData, tokenizer)."""
    d = cfg.data
    records = load_records(d, min_records=1 if d.eval_path else 2)
    records_fp = data_key(records._fingerprint, d.text_field)
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
        tokenizer.save_pretrained(tokenizer_dir)  # workers load this copy: no hub round-trips
    splits = {}
    for split, recs, idx, source in (("train", records, train_idx, d.path),
                                     ("val", eval_records, val_idx, d.eval_path or d.path)):
        fp = records_fp if recs is records else data_key(recs._fingerprint, d.text_field)
        encoded, key = _encode_split(recs, idx, split, source, tokenizer, tok_fp, fp, cfg)
        splits[split] = _rows(encoded, key, split, source, cfg)
    (train_path, train), (val_path, val) = splits["train"], splits["val"]
    prepared = PreparedData(
        train_path, val_path, tokenizer_dir, train["samples"], val["samples"], train["tokens"], val["tokens"],
        train["rows"], val["rows"], d.seq_len, packing=packing_of(cfg), train_target_tokens=train["target_tokens"],
        val_target_tokens=val["target_tokens"],
        **{k: train.get(k, 0) + val.get(k, 0) for k in ("skipped_no_reply", "dropped_too_long", "truncated",
                                                         "skipped_identical")},
        end_of_turn=end_of_turn(tokenizer) if d.format in CHAT_FORMATS else None)
    return prepared, tokenizer
