"""The global order of training rows: one seeded permutation per epoch, the same for any worker count.

Each optimizer step consumes the next `rows_per_step` rows of the epoch's permutation (the global
batch), cut into micro-batches of `micro_batch_size`; rank r trains micro-batches r*accum .. r*accum+accum-1
of it. The resume state is the global position (epoch, rows consumed in it), so a run resumed with a
different number of workers continues at the same row, and no row is skipped or trained twice within
an epoch. When the rest of an epoch cannot fill a global batch, it is dropped and the next epoch begins
(as DistributedSampler's drop_last). Dropout noise is keyed by (seed, step, global micro-batch) too, so
with the same global batch the weights do not depend on how it was split among workers.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch


class GlobalOrder:
    def __init__(self, n_rows: int, seed: int, rows_per_step: int, micro_batch_size: int, epoch: int = 0,
                 position: int = 0, blocks_seen: int = 0):
        if rows_per_step > n_rows:
            raise ValueError(f"a step needs {rows_per_step} rows and the training split has {n_rows}")
        if rows_per_step % micro_batch_size:
            raise ValueError(f"rows_per_step={rows_per_step} is not a multiple of micro_batch_size={micro_batch_size}")
        self.n_rows, self.seed = n_rows, seed
        self.rows_per_step, self.micro_batch_size = rows_per_step, micro_batch_size
        self.epoch, self.position, self.blocks_seen = epoch, position, blocks_seen
        self.step_rows: List[int] = []  # the rows of the last step taken (all ranks')
        self._permutation_epoch, self._permutation = -1, np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._permutation_epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.n_rows)
            self._permutation_epoch = epoch
        return self._permutation

    def next_step(self) -> List[List[int]]:
        """The next global batch as micro-batches of row indices, in global micro-batch order."""
        if self.position + self.rows_per_step > self.n_rows:
            self.epoch, self.position = self.epoch + 1, 0
        rows = self.permutation(self.epoch)[self.position:self.position + self.rows_per_step].tolist()
        self.position += self.rows_per_step
        self.blocks_seen += self.rows_per_step
        self.step_rows = rows
        m = self.micro_batch_size
        return [rows[i:i + m] for i in range(0, len(rows), m)]

    def rank_micro_batches(self, rank: int, world_size: int) -> List[tuple[int, List[int]]]:
        """This rank's contiguous share of the next step: (global micro-batch index, row indices) pairs."""
        micro_batches = self.next_step()
        accum = len(micro_batches) // world_size
        return [(k, micro_batches[k]) for k in range(rank * accum, (rank + 1) * accum)]

    def state(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "blocks_seen": self.blocks_seen}


def seed_micro_batch(seed: int, step: int, global_micro_batch: int) -> None:
    """Seed torch for one micro-batch: its dropout masks depend on where it is in the run, not on the rank."""
    torch.manual_seed(int(np.random.SeedSequence([seed, step, global_micro_batch]).generate_state(1)[0]))
