"""Large checkpoint files written around the page cache (O_DIRECT), through one reused buffer.

A checkpoint is written once and seldom read. Through the page cache, every checkpoint needs ~1 GB of new
cache pages at 87M parameters with AdamW state; on this project's VM, touching guest memory the host has
taken back costs ~2.5 s of CPU per GB, which a background writer takes from training. O_DIRECT hands the
bytes to the disk from a page-aligned buffer that stays mapped from one checkpoint to the next: measured here,
torch.save of 700 MB of optimizer state cost 0.11 s of CPU instead of 0.2-1.7 s. Where O_DIRECT is refused
(tmpfs, some overlay filesystems, macOS), the file is written the usual way.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from contextlib import contextmanager
from typing import Iterator

CHUNK_BYTES = 64 * 2**20  # the reused buffer: large writes for the disk, little memory
ALIGN_BYTES = 4096  # O_DIRECT wants buffer, offset and length aligned to the logical block size (<= 4 KiB)

_buffer = None  # one per process, created on first use; the lock keeps two writers off it
_lock = threading.Lock()


class _DirectFile:
    """A write-only file object: bytes gather in the buffer, every full buffer goes to disk in one write."""

    def __init__(self, path: str, buffer: mmap.mmap):
        self.path, self.buffer = path, buffer
        self.fill = self.size = 0  # bytes in the buffer; bytes given to write()
        self.drained = self.fill_written = 0  # bytes on disk before this buffer; of this buffer
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self.direct = hasattr(os, "O_DIRECT")
        try:
            self.fd = os.open(path, flags | (os.O_DIRECT if self.direct else 0), 0o644)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            self.direct, self.fd = False, os.open(path, flags, 0o644)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            n = min(len(view) - done, CHUNK_BYTES - self.fill)
            self.buffer[self.fill:self.fill + n] = view[done:done + n]
            self.fill, done = self.fill + n, done + n
            if self.fill == CHUNK_BYTES:
                self._drain(CHUNK_BYTES)
        self.size += len(view)
        return len(view)

    def flush(self) -> None:  # torch.save calls it; bytes stay in the buffer until it is full or closed
        pass

    def close(self) -> None:
        """The tail, padded to a whole block, then cut back to the true size; on disk before returning."""
        padded = -(-self.fill // ALIGN_BYTES) * ALIGN_BYTES
        self.buffer[self.fill:padded] = bytes(padded - self.fill)
        self._drain(padded)
        os.ftruncate(self.fd, self.size)
        os.fsync(self.fd)
        os.close(self.fd)

    def _drain(self, length: int) -> None:
        view = memoryview(self.buffer)[:length]
        try:
            while self.fill_written < length:
                self.fill_written += os.write(self.fd, view[self.fill_written:])
        except OSError as err:  # a filesystem that accepts the flag at open and refuses the write
            if err.errno != errno.EINVAL or not self.direct:
                raise
            os.close(self.fd)
            self.direct, self.fd = False, os.open(self.path, os.O_WRONLY)
            os.lseek(self.fd, self.drained + self.fill_written, os.SEEK_SET)
            view.release()
            self._drain(length)
            return
        view.release()
        self.drained += length
        self.fill = self.fill_written = 0


@contextmanager
def direct_writer(path: str) -> Iterator[_DirectFile]:
    """`with direct_writer(path) as f: torch.save(obj, f)`: the file is complete and on disk after the block."""
    global _buffer
    with _lock:
        if _buffer is None:
            _buffer = mmap.mmap(-1, CHUNK_BYTES)  # anonymous: page-aligned, as O_DIRECT needs
        f = _DirectFile(path, _buffer)
        try:
            yield f
        finally:
            f.close()
