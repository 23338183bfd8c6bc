"""Packed rows on disk, and the torch dataset workers read them through (memory-mapped, cheap per worker).

A packed split is a directory written once, atomically:

    input_ids.npy      int32 [rows, seq_len], PAD (-1) where a row is empty
    labels.npy         int32, IGNORE (-100) where no loss is taken (absent: every token trains)
    position_ids.npy   int32, restarting at 0 at each sample (absent: 0..seq_len-1 in every row)
    sequence_ids.npy   int32, which sample each token belongs to (preference pairs; absent otherwise)
    rows.json          counts: rows, samples, tokens, target tokens, dropped / truncated samples

The `ray` engine (`ray_engine.py`) writes a split as token shards instead, one per corpus file:

    tok-000000.bin     uint32 tokens of that file's documents in this split, each ending in EOS
    tokens.json        seq_len and the shards in order with their token counts

and row b is tokens [b*seq_len, (b+1)*seq_len) of the shards read back to back, the last row padded:
concat packing, the same rows the datasets engine packs from the same documents. For other formats and
packings it writes one packed directory (the layout above) per corpus file, listed in order in
`shards.json`, and a split's rows are theirs read back to back.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List

import numpy as np

from rtune.data.packing import PAD, Rows
from rtune.tokens import IGNORE

META = "rows.json"
TOKENS_META = "tokens.json"
SHARDS_META = "shards.json"


def save_rows(path: str, rows: Rows, extra: Dict[str, int]) -> Dict[str, int]:
    """Write rows into directory `path` atomically (readers never see half of it); returns its counts."""
    meta = {"rows": rows.n_rows, "seq_len": int(rows.arrays["input_ids"].shape[1]), "samples": rows.samples,
            "tokens": rows.tokens, "target_tokens": rows.target_tokens, **rows.stats, **extra}
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name, array in rows.arrays.items():
        np.save(os.path.join(tmp, f"{name}.npy"), array)
    with open(os.path.join(tmp, META), "w") as f:
        json.dump(meta, f)
    try:
        os.replace(tmp, path)
    except OSError:  # another process wrote the same content first
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def load_meta(path: str) -> Dict[str, int]:
    with open(os.path.join(path, META)) as f:
        return json.load(f)


class PackedRows:
    """A map-style torch dataset over one packed split directory.

    Each item: `input_ids` (padding replaced by the tokenizer's pad id), `labels` (IGNORE on padding and
    on tokens that carry no loss), `position_ids`, and `n_tokens` (its non-padding tokens).
    """

    def __init__(self, path: str, pad_token_id: int):
        self.path = path
        self.pad_token_id = pad_token_id
        if os.path.exists(os.path.join(path, TOKENS_META)):
            self.arrays = {"input_ids": TokenStream(path)}
        elif os.path.exists(os.path.join(path, SHARDS_META)):
            self.arrays = RowShards(path).columns()
        else:
            self.arrays = {name[:-4]: np.load(os.path.join(path, name), mmap_mode="r")
                           for name in sorted(os.listdir(path)) if name.endswith(".npy")}
        self.input_ids = self.arrays["input_ids"]
        self.seq_len = self.input_ids.shape[1]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, index: int) -> dict:
        import torch

        ids = torch.from_numpy(np.array(self.input_ids[index], dtype=np.int64))
        pad = ids == PAD
        labels = torch.from_numpy(np.array(self.arrays["labels"][index], dtype=np.int64)) \
            if "labels" in self.arrays else ids.clone()
        if "position_ids" in self.arrays:
            positions = torch.from_numpy(np.array(self.arrays["position_ids"][index], dtype=np.int64))
        else:
            positions = torch.arange(self.seq_len)
        item = {"input_ids": ids.masked_fill(pad, self.pad_token_id), "labels": labels.masked_fill(pad, IGNORE),
                "position_ids": positions, "n_tokens": torch.tensor(int((~pad).sum()))}
        if "sequence_ids" in self.arrays:
            item["sequence_ids"] = torch.from_numpy(np.array(self.arrays["sequence_ids"][index], dtype=np.int64))
        return item


class TokenStream:
    """Rows of seq_len tokens cut from token shards read back to back (the ray engine's layout), indexed
    like the `[rows, seq_len]` input_ids array of the other layout; shards are memory-mapped."""

    def __init__(self, path: str):
        with open(os.path.join(path, TOKENS_META)) as f:
            meta = json.load(f)
        self.seq_len = int(meta["seq_len"])
        self.shards = [np.memmap(os.path.join(path, name), dtype=np.uint32, mode="r")
                       for name, n_tokens in meta["files"] if n_tokens]
        self.starts = np.concatenate([[0], np.cumsum([len(s) for s in self.shards], dtype=np.int64)])
        self.total_tokens = int(self.starts[-1])
        self.shape = (max(1, -(-self.total_tokens // self.seq_len)), self.seq_len)

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index) + (self.shape[0] if index < 0 else 0)
        if not 0 <= index < self.shape[0]:
            raise IndexError(index)
        row = np.full(self.seq_len, PAD, dtype=np.int32)
        start, end = index * self.seq_len, min((index + 1) * self.seq_len, self.total_tokens)
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        filled = 0
        while start + filled < end:  # a row may span the end of one shard and the start of the next
            offset = start + filled - int(self.starts[shard])
            take = min(end - start - filled, len(self.shards[shard]) - offset)
            row[filled:filled + take] = self.shards[shard][offset:offset + take]
            filled += take
            shard += 1
        return row


class RowShards:
    """Packed directories (one per corpus file, from the ray engine) read back to back, column by column."""

    def __init__(self, path: str):
        with open(os.path.join(path, SHARDS_META)) as f:
            names = json.load(f)["shards"]
        self.parts = [{n[:-4]: np.load(os.path.join(path, name, n), mmap_mode="r")
                       for n in sorted(os.listdir(os.path.join(path, name))) if n.endswith(".npy")} for name in names]
        self.starts = np.concatenate([[0], np.cumsum([p["input_ids"].shape[0] for p in self.parts], dtype=np.int64)])
        self.seq_len = int(self.parts[0]["input_ids"].shape[1])

    def columns(self) -> Dict[str, _Column]:
        return {name: _Column(self, name) for name in sorted({n for p in self.parts for n in p})}

    def row(self, name: str, index: int) -> np.ndarray:
        index = int(index) + (int(self.starts[-1]) if index < 0 else 0)
        if not 0 <= index < self.starts[-1]:
            raise IndexError(index)
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        part, local = self.parts[shard], index - int(self.starts[shard])
        if name in part:
            return part[name][local]
        # A shard may leave out a column that equals its default (pack() omits those).
        return part["input_ids"][local] if name == "labels" else np.arange(self.seq_len, dtype=np.int32)


class _Column:
    def __init__(self, shards: RowShards, name: str):
        self.shards, self.name = shards, name
        self.shape = (int(shards.starts[-1]), shards.seq_len)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.shards.row(self.name, index)


def collate(items: List[dict]) -> dict:
    """Stack items; columns past the longest row's last real token are cut (`packing=none` pads no further)."""
    import torch

    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    width = int(batch["n_tokens"].max()) if len(batch["n_tokens"]) else 0
    if 0 < width < batch["input_ids"].shape[1]:  # padding only ever ends a row
        for key in ("input_ids", "labels", "position_ids", "sequence_ids"):
            if key in batch:
                batch[key] = batch[key][:, :width]
    return batch

