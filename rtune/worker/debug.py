"""`debug.*`: deterministic fault injection and records for tests and drills, kept out of the loop's way.

    fail_at_step    SIGKILL one rank once, right after that step's report, as a crashed machine would
    record_rows     every rank appends the rows it trained at each step to `<run>/rows_rank<N>.jsonl`
    step_delay_s    every rank pauses after each step: a tiny model trained at a real model's pace
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from typing import List, Optional

from rtune import checkpoint as ckpt
from rtune.config import RTuneConfig
from rtune.worker.collectives import gather_objects


class DebugHooks:
    def __init__(self, cfg: RTuneConfig, rank: int, world_size: int, run_dir: Optional[str]):
        self.cfg, self.rank, self.world_size, self.run_dir = cfg, rank, world_size, run_dir
        # this worker group's id (rank 0's, on every rank), so a reader keeps only the newest group's record of
        # a step that a lost group had trained after its last checkpoint
        self.group = gather_objects(secrets.token_hex(4))[0] if cfg.debug.record_rows else ""

    def after_step(self, step: int, epoch: int, rows: List[List[int]]) -> None:
        """After optimizer step `step`: the pause, and the record of the rows this rank trained."""
        if self.cfg.debug.step_delay_s:
            time.sleep(self.cfg.debug.step_delay_s)
        if self.cfg.debug.record_rows and self.run_dir is not None:
            record = {"step": step, "epoch": epoch, "world_size": self.world_size, "group": self.group,
                      "time": time.time(), "rows": rows}
            with open(os.path.join(self.run_dir, f"rows_rank{self.rank}.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")

    def after_report(self, step: int, checkpointed: bool) -> None:
        """debug.fail_at_step: SIGKILL this worker once, as a crashed machine would.

        With async uploads it first waits for this step's checkpoint to be complete on storage, so a drill
        resumes where it says; with debug.upload_delay_s only for its marker: a worker lost mid-upload."""
        cfg, run_dir = self.cfg, self.run_dir
        if cfg.debug.fail_at_step != step or self.rank != cfg.debug.fail_rank or run_dir is None:
            return
        marker = os.path.join(run_dir, f".fault_injected_step{step}_rank{self.rank}")
        if os.path.exists(marker):
            return
        open(marker, "w").close()
        if checkpointed and cfg.trainer.checkpoint_upload == "async":
            step_dir = os.path.join(run_dir, ckpt.dir_name(step))
            deadline = time.time() + 120
            while time.time() < deadline:
                if os.path.exists(os.path.join(step_dir, ckpt.MARKER)) if cfg.debug.upload_delay_s else \
                        ckpt.find_latest(run_dir) == step_dir:
                    break
                time.sleep(0.05)
        print(f"[rtune] debug.fail_at_step={step}: killing rank {self.rank} (pid {os.getpid()})", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
