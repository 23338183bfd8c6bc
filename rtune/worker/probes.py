"""Memory probes a run reports in its summary: each worker's resident set before and at its peak while it builds
and shards the model, its peak while training, and around its first checkpoint (what a checkpoint costs the
training process)."""

from __future__ import annotations

import contextlib
import resource
from typing import Dict, Optional

from rtune.memory import peak_rss_mb, reset_peak_rss, rss_mb


class LoadProbe:
    """Around the model's build and wrapping: the resident set before, and its peak during."""

    def __init__(self):
        self.mb = {"before": rss_mb()}
        reset_peak_rss()

    def done(self) -> None:
        self.mb["peak"] = peak_rss_mb()


class MemoryProbe:
    """Created once the model is built and wrapped: from then on the peak counts what training holds."""

    def __init__(self, load_mb: Optional[Dict[str, float]] = None):
        self.build_peak_mb = peak_rss_mb()  # imports, model build, wrapping
        self.load_mb = load_mb or {}
        reset_peak_rss()
        self.train_peak_mb: Optional[float] = None  # until the first checkpoint
        self.checkpoint_mb: Dict[str, float] = {}  # the first checkpoint: resident set before it, peak during it

    @contextlib.contextmanager
    def around_report(self, with_checkpoint: bool):
        """Measure the first checkpoint: with sync upload, the whole write; with async, the training thread's part."""
        first = with_checkpoint and self.train_peak_mb is None
        if first:
            self.train_peak_mb, before = peak_rss_mb(), rss_mb()
            reset_peak_rss()
        yield
        if first:
            self.checkpoint_mb = {"before": before, "peak": peak_rss_mb()}

    def summary(self) -> Dict[str, object]:
        return {"train": self.train_peak_mb or peak_rss_mb(), "checkpoint": self.checkpoint_mb, "load": self.load_mb,
                "run": max(self.build_peak_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
