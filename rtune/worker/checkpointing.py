"""Checkpoints from the workers: written by every rank, reported to Ray, copied to storage.

`trainer.checkpoint_upload=sync`: every rank writes its part into a local directory, rank 0 writes the
marker (listing every rank's files) last, and `ray.train.report` copies the directory to storage before
training goes on.

`async` (default): the training thread only copies the state into CPU memory (`strategy.snapshot()`, a
collective for gathered FSDP state; the previous checkpoint's buffers are refilled) and reports; writing the
files and the marker, and copying them to storage (marker last; local storage takes them by rename, each file
flushed to disk and dropped from the page cache first), happen in Ray's background upload thread
(`checkpoint_upload_fn`) at a lower CPU priority, so training continues.
One checkpoint is in flight at a time: the next waits until the previous is stored. Sharded
FSDP state, LoRA adapters and DeepSpeed partitions are written to local disk in the training thread (each
rank its own part, no copy in memory) and only the copy to storage runs in the background.

Either way a checkpoint counts once its marker and every file the marker lists are on storage
(`rtune.checkpoint.scan`), so a worker lost mid-upload never leaves a resume point behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Optional

from rtune import checkpoint as ckpt
from rtune.config import RTuneConfig, to_dict
from rtune.worker.collectives import gather_objects
from rtune.worker.reference import PrecomputedReference
from rtune.worker.strategy import Strategy


class CheckpointReporter:
    def __init__(self, cfg: RTuneConfig, strategy: Strategy, tokenizer, base_model, reference=None):
        self.cfg, self.strategy, self.tokenizer = cfg, strategy, tokenizer
        self.base_model, self.reference = base_model, reference
        self._stored = threading.Event()  # set: no checkpoint of this rank is still being written or copied
        self._stored.set()

    def report(self, step: int, record: Dict[str, Any], with_checkpoint: bool, data_state: Dict[str, int],
               tracker_ids: Optional[Dict[str, str]] = None) -> None:
        """Report metrics from every rank (a barrier); on checkpoint steps every rank adds its part."""
        import ray.train

        metrics = {"step": step, **{k: float(v) for k, v in record.items()}}
        if not with_checkpoint:
            ray.train.report(metrics)
            return
        trainer_state = {"step": step, "data": data_state, "world_size": self.strategy.world_size,
                         "tracking": tracker_ids or {}}
        # The last checkpoint is the run's model: always a consolidated Hugging Face one.
        with_hf = step == self.cfg.trainer.max_steps or self.cfg.trainer.save_hf_every_checkpoint
        background = self.cfg.trainer.checkpoint_upload == "async"
        write = None
        if background:
            self._stored.wait()  # at most one checkpoint in flight: memory stays bounded if storage is slow
            write = self.strategy.snapshot(with_hf)  # a collective for gathered FSDP state
        if write is not None:
            self._report_in_background(step, metrics, trainer_state, write)
        else:
            self._report_written(step, metrics, trainer_state, background, with_hf)

    # ---- sync (and DeepSpeed): write here, copy in report ----------------------------------------

    def _report_written(self, step: int, metrics: Dict[str, Any], trainer_state: Dict[str, Any],
                        background_copy: bool, with_hf: bool) -> None:
        import ray.train
        from ray.train import Checkpoint

        tmp_dir = tempfile.mkdtemp(prefix="rtune-ckpt-")
        handed_over = False  # once Ray's upload thread owns tmp_dir, it deletes it
        try:
            resume_state = self.strategy.save(tmp_dir, with_hf)  # a collective for sharded strategies
            if self.strategy.rank == 0:
                self._write_rank0_files(tmp_dir, {**trainer_state, **resume_state})
            files_by_rank = gather_objects(ckpt.list_files(tmp_dir))
            if self.strategy.rank == 0:
                ckpt.write_marker(tmp_dir, step, metrics, {k: v for files in files_by_rank for k, v in files.items()})
            checkpoint = Checkpoint.from_directory(tmp_dir) if os.listdir(tmp_dir) else None
            upload: Dict[str, Any] = {}
            if background_copy and checkpoint is not None:
                self._stored.clear()
                upload = {"checkpoint_upload_mode": ray.train.CheckpointUploadMode.ASYNC,
                          "delete_local_checkpoint_after_upload": False,
                          "checkpoint_upload_fn": self._in_background(lambda: tmp_dir)}
                handed_over = True
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=ckpt.dir_name(step), **upload)
        finally:
            if not handed_over:
                shutil.rmtree(tmp_dir, ignore_errors=True)

    # ---- async: copy the state here, write and copy to storage in Ray's upload thread --------------

    def _report_in_background(self, step: int, metrics: Dict[str, Any], trainer_state: Dict[str, Any],
                              write: Callable[[str], Dict[str, Any]]) -> None:
        import ray.train
        from ray.train import Checkpoint

        if self.strategy.rank != 0:  # DDP and gathered FSDP checkpoints are rank 0's files only
            ray.train.report(metrics)
            return
        tmp_dir = tempfile.mkdtemp(prefix="rtune-ckpt-")

        def write_all() -> str:
            resume_state = write(tmp_dir)
            self._write_rank0_files(tmp_dir, {**trainer_state, **resume_state})
            ckpt.write_marker(tmp_dir, step, metrics, ckpt.list_files(tmp_dir))
            return tmp_dir

        self._stored.clear()
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp_dir),
                         checkpoint_dir_name=ckpt.dir_name(step),
                         checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
                         delete_local_checkpoint_after_upload=False,
                         checkpoint_upload_fn=self._in_background(write_all))

    def _in_background(self, prepare: Callable[[], str]):
        """Ray's checkpoint_upload_fn: prepare the local directory, copy it to storage, clean up, signal."""
        def upload(checkpoint, dir_name: str):
            local_dir = checkpoint.path
            _yield_to_training()
            try:
                prepare()
                return copy_to_storage(local_dir, dir_name, self.cfg.debug.upload_delay_s)
            finally:
                shutil.rmtree(local_dir, ignore_errors=True)
                self._stored.set()
        return upload

    def _write_rank0_files(self, out_dir: str, trainer_state: Dict[str, Any]) -> None:
        ckpt.write_rank0_files(out_dir, self.tokenizer, trainer_state, to_dict(self.cfg))
        if isinstance(self.reference, PrecomputedReference):  # resume never recomputes them from trained weights
            self.reference.save(out_dir)
        if isinstance(self.base_model, str):  # QLoRA: the from-config base's saved files
            shutil.copytree(self.base_model, os.path.join(out_dir, "base_model"))
        elif self.base_model is not None:  # LoRA on a model built from config: keep the base it adapts
            module, pristine = self.base_model
            module.save_pretrained(os.path.join(out_dir, "base_model"), state_dict=dict(pristine),
                                   safe_serialization=True)  # a copy: save_pretrained empties the dict


WRITER_NICE = 10  # measured: lower stall than nice 0; SCHED_IDLE starves the writer (the next checkpoint waits)


def _yield_to_training() -> None:
    """Run this (Ray's upload) thread below the training thread's priority: on a busy CPU the writer takes the
    cycles training leaves, instead of a share of the core the step in progress runs on (Linux: nice is per
    thread; elsewhere a no-op)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
    except (AttributeError, OSError):
        pass


def copy_to_storage(local_dir: str, dir_name: str, delay_s: float = 0.0):
    """Copy a checkpoint directory into the run's storage, its marker last: a reader that sees the marker
    sees a finished copy (on stores without atomic renames, the marker's file sizes still rule).

    delay_s (debug.upload_delay_s): the marker first and a pause after every entry, so a test can lose a
    worker while storage holds a marker without the files it lists.
    """
    import ray.train
    from ray.train import Checkpoint

    storage = ray.train.get_context().get_storage()
    dest, fs = f"{storage.experiment_fs_path}/{dir_name}", storage.storage_filesystem
    put_directory(local_dir, dest, fs, delay_s)
    return Checkpoint(dest, filesystem=fs)


def put_directory(local_dir: str, dest: str, fs, delay_s: float = 0.0) -> None:
    """copy_to_storage's copy into `dest` on pyarrow filesystem `fs` (every rank of a sharded checkpoint puts
    its own part into the same `dest` at once)."""
    import pyarrow.fs

    fs.create_dir(dest)
    # Local storage on the same filesystem: rename instead of copying (a checkpoint is written once, not twice;
    # the copy's CPU time was taken from training). Elsewhere, or across filesystems, a copy.
    local = isinstance(fs, pyarrow.fs.LocalFileSystem)
    names = sorted(os.listdir(local_dir), key=lambda n: ((n == ckpt.MARKER) != bool(delay_s), n))
    for name in names:
        source = os.path.join(local_dir, name)
        if not (local and _moved(source, os.path.join(dest, name))):
            if os.path.isdir(source):
                fs.create_dir(f"{dest}/{name}")
            pyarrow.fs.copy_files(source, f"{dest}/{name}", destination_filesystem=fs)
        if delay_s:
            time.sleep(delay_s)


def _moved(source: str, target: str) -> bool:
    """Rename source onto target, a directory entry by entry: the ranks of a sharded checkpoint move their parts
    into the same folders (fsdp_shards/) at the same time, and renaming a whole folder onto one another rank just
    created fails. A file already there (a retried upload) is replaced. False: another filesystem, copy instead."""
    try:
        if not os.path.isdir(source):
            _flush_and_drop(source)
            os.replace(source, target)
            return True
        os.makedirs(target, exist_ok=True)
        return all(_moved(os.path.join(source, name), os.path.join(target, name)) for name in os.listdir(source))
    except OSError as err:
        if err.errno == errno.EXDEV:
            return False
        raise


def _flush_and_drop(path: str) -> None:
    """Put a file's data on disk, then drop it from the page cache, before it is moved into storage.

    On disk: the marker moves in last, so storage never shows a marker whose files live only in memory.
    Dropped: a checkpoint is written once and seldom read, and ~1 GB of fresh page cache per checkpoint (87M
    parameters with AdamW state) cost the writer 1.5-2.5 s of CPU on this project's VM (touching guest memory
    for the first time is slow there), taken from training; with the pages handed back after each write, the
    next write reuses them (measured: the writer's CPU per checkpoint 2.2-2.8 s -> 0.4-1.0 s; fsync's wait is
    the background thread's). Elsewhere than Linux, fsync only.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
