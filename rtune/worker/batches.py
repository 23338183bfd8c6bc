"""Batch sources: where the loop's micro-batches come from.

The loop asks its source for this rank's micro-batches of a step (`next_step(step)`), saves `state()` in every
checkpoint, and logs `metrics()`. `PackedRowsSource` serves packed rows in the global order of `order.py`
(one seeded permutation per epoch, the same for any worker count); a source of rollouts for online RL
implements the same three methods, so the loop does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol

import torch

from rtune.data.rows import PackedRows, collate
from rtune.worker.order import GlobalOrder


@dataclass
class MicroBatch:
    """One forward/backward pass worth of rows, on the device.

    tensors: what the objective reads (`input_ids`, `labels`, `position_ids`, ...).
    index: its place in the step's global batch (dropout is seeded by it, not by the rank).
    rows: the training rows it holds (`debug.record_rows`).
    """

    tensors: Dict[str, torch.Tensor]
    index: int
    rows: List[int]


class BatchSource(Protocol):
    def next_step(self, step: int) -> List[MicroBatch]:
        """This rank's micro-batches for optimizer step `step` (0-based: the step about to be taken)."""

    def state(self) -> Dict[str, int]:
        """What a checkpoint needs to continue at the same place (plain data)."""

    def metrics(self) -> Dict[str, int]:
        """What is logged with each record: counters (rows consumed, epoch), and means over the steps since the last
        call (rollout statistics)."""

    @property
    def epoch(self) -> int:
        """The epoch of the data order the last step was in."""


class PackedRowsSource:
    """Packed training rows in the global order: each step takes the next `rows_per_step` rows of the epoch's
    permutation, and this rank trains its contiguous share of the step's micro-batches.

    Args:
        rows: The training split.
        seed: The run's seed (the permutation of each epoch derives from it).
        rank, world_size: This worker and the group's size.
        micro_batch_size: Rows per micro-batch.
        grad_accum_steps: Micro-batches per rank per step.
        device: Where the tensors go.
        position: The global position a checkpoint saved (`state()`), or None to start at row 0 of epoch 0.
    """

    def __init__(self, rows: PackedRows, seed: int, rank: int, world_size: int, micro_batch_size: int,
                 grad_accum_steps: int, device: torch.device, position: Optional[Dict[str, int]] = None):
        self.rows, self.rank, self.world_size, self.device = rows, rank, world_size, device
        self.rows_per_step = world_size * micro_batch_size * grad_accum_steps
        self.order = GlobalOrder(len(rows), seed, self.rows_per_step, micro_batch_size, **(position or {}))

    @property
    def steps_per_epoch(self) -> int:
        return len(self.rows) // self.rows_per_step

    @property
    def epoch(self) -> int:
        return self.order.epoch

    def next_step(self, step: int) -> List[MicroBatch]:
        return [MicroBatch({k: v.to(self.device, non_blocking=True)
                            for k, v in collate([self.rows[i] for i in rows]).items()}, index, rows)
                for index, rows in self.order.rank_micro_batches(self.rank, self.world_size)]

    def state(self) -> Dict[str, int]:
        return self.order.state()

    def metrics(self) -> Dict[str, int]:
        return {"blocks_seen": self.order.blocks_seen, "epoch": self.order.epoch}
