"""Samples -> fixed-length rows (`data.packing`).

    concat    samples stream into `seq_len` rows back to back and may be cut across rows; a token may
              attend to the samples before it in its row. Raw-text continued pre-training (the default
              for `text`): every token is used, the last row alone is padded.
    isolated  whole samples are placed into rows by best-fit-decreasing; each sample's position ids
              restart at 0, which makes attention block-diagonal (no sample sees another), and its
              first token is never a target. No padding but at the end of a row.
    none      one sample per row, padded (to the longest in the batch when batched): the baseline.

Rows are int32 arrays `[n_rows, seq_len]`: `input_ids` (PAD where empty), `labels` (IGNORE where no
loss; omitted when it equals input_ids) and `position_ids` (omitted when every row is 0..seq_len-1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

from rtune.tokens import IGNORE

PAD = -1  # marks padding in stored rows; never a real token id


@dataclass
class Rows:
    """Packed rows and what they hold."""

    arrays: Dict[str, np.ndarray]
    samples: int = 0  # samples placed in rows
    tokens: int = 0  # non-padding tokens
    target_tokens: int = 0  # tokens that carry the loss
    stats: Dict[str, int] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.arrays["input_ids"].shape[0])


def _lengths(samples: Sequence[Sequence[int]]) -> np.ndarray:
    return np.fromiter((len(s) for s in samples), dtype=np.int64, count=len(samples))


def pack_concat(ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]] | None, seq_len: int) -> Rows:
    """Stream samples back to back into rows of seq_len; only the very last row is padded."""
    lengths = _lengths(ids)
    total = int(lengths.sum())
    n_rows = max(1, -(-total // seq_len))
    flat_ids = np.full(n_rows * seq_len, PAD, dtype=np.int32)
    flat_ids[:total] = np.concatenate([np.asarray(s, dtype=np.int32) for s in ids]) if total else []
    arrays = {"input_ids": flat_ids.reshape(n_rows, seq_len)}
    targets = total
    if labels is not None:
        flat_labels = np.full(n_rows * seq_len, IGNORE, dtype=np.int32)
        flat_labels[:total] = np.concatenate([np.asarray(s, dtype=np.int32) for s in labels]) if total else []
        arrays["labels"] = flat_labels.reshape(n_rows, seq_len)
        targets = int((flat_labels != IGNORE).sum())
    return Rows(arrays, samples=len(ids), tokens=total, target_tokens=targets)


class _FirstFit:
    """Smallest bin capacity >= n among the open bins, in O(log seq_len) (a Fenwick tree over capacities)."""

    def __init__(self, seq_len: int):
        self.size = seq_len + 1
        self.tree = [0] * (self.size + 1)
        self.bins_by_room: List[List[int]] = [[] for _ in range(self.size)]

    def _add(self, room: int, delta: int) -> None:
        i = room + 1
        while i <= self.size:
            self.tree[i] += delta
            i += i & -i

    def _prefix(self, room: int) -> int:  # open bins with room < `room`
        i, total = room, 0
        while i > 0:
            total += self.tree[i]
            i -= i & -i
        return total

    def put(self, bin_id: int, room: int) -> None:
        self.bins_by_room[room].append(bin_id)
        self._add(room, 1)

    def take(self, need: int) -> int | None:
        """Remove and return the open bin with the least room >= need (None if none fits)."""
        below = self._prefix(need)
        if below == self._prefix(self.size):
            return None
        # binary-lift to the smallest room r with prefix(r + 1) > below
        pos, remaining, step = 0, below, 1 << self.size.bit_length()
        while step:
            nxt = pos + step
            if nxt <= self.size and self.tree[nxt] <= remaining:
                pos, remaining = nxt, remaining - self.tree[nxt]
            step >>= 1
        room = pos  # tree index pos + 1 holds room `pos`
        self._add(room, -1)
        return self.bins_by_room[room].pop()


def best_fit_decreasing(lengths: Sequence[int], seq_len: int) -> List[List[int]]:
    """Sample indices per bin: longest first, each into the fullest bin it still fits (ties: stable)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: List[List[int]] = []
    rooms: List[int] = []
    fit = _FirstFit(seq_len)
    for i in order:
        n = int(lengths[i])
        b = fit.take(n)
        if b is None:
            b = len(bins)
            bins.append([])
            rooms.append(seq_len)
        bins[b].append(i)
        rooms[b] -= n
        if rooms[b] > 0:
            fit.put(b, rooms[b])
    return bins


def pack_isolated(ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], seq_len: int,
                  one_per_row: bool = False, groups: Sequence[Sequence[int]] | None = None) -> Rows:
    """Whole samples into rows; positions restart at 0 per sample; a sample's first token is no target.

    groups: sample indices that must share a row (a preference pair); each group is placed as a unit.
    one_per_row: `packing=none`: each sample (group) alone in its row.
    """
    units = [list(g) for g in groups] if groups is not None else [[i] for i in range(len(ids))]
    lengths = [sum(len(ids[i]) for i in unit) for unit in units]
    bins = [[u] for u in range(len(units))] if one_per_row else best_fit_decreasing(lengths, seq_len)
    n_rows = max(1, len(bins))
    input_ids = np.full((n_rows, seq_len), PAD, dtype=np.int32)
    row_labels = np.full((n_rows, seq_len), IGNORE, dtype=np.int32)
    positions = np.zeros((n_rows, seq_len), dtype=np.int32)
    sequence_ids = np.full((n_rows, seq_len), -1, dtype=np.int32)
    for row, unit_indices in enumerate(bins):
        cursor = 0
        for u in unit_indices:
            for i in units[u]:
                n = len(ids[i])
                input_ids[row, cursor:cursor + n] = ids[i]
                row_labels[row, cursor:cursor + n] = labels[i]
                row_labels[row, cursor] = IGNORE  # nothing of this sample precedes its first token
                positions[row, cursor:cursor + n] = np.arange(n)
                sequence_ids[row, cursor:cursor + n] = i
                cursor += n
        positions[row, cursor:] = np.arange(seq_len - cursor)  # the padding is a segment of its own
    arrays = {"input_ids": input_ids, "labels": row_labels}
    if not one_per_row:
        arrays["position_ids"] = positions
    if groups is not None:
        arrays["sequence_ids"] = sequence_ids
    tokens = int((input_ids != PAD).sum())
    return Rows(arrays, samples=len(ids), tokens=tokens, target_tokens=int((row_labels != IGNORE).sum()))


def pack(ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]] | None, seq_len: int, packing: str,
         groups: Sequence[Sequence[int]] | None = None) -> Rows:
    """Dispatch on `data.packing`; `labels` None means every token trains (raw text)."""
    if packing == "concat":
        return pack_concat(ids, labels, seq_len)
    labels = labels if labels is not None else ids
    return pack_isolated(ids, labels, seq_len, one_per_row=packing == "none", groups=groups)
