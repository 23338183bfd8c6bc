"""The driver's view of a run on a local cluster: rank 0's metrics and events, read from the run directory
and shown as a tqdm bar on a terminal or as plain lines otherwise."""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Dict, List, Optional

from rtune.metrics import EVENTS_FILE, METRICS_FILE, format_record


class _Tail:
    """New JSON lines of a file that may be truncated and rewritten (a resumed run trims metrics.jsonl)."""

    def __init__(self, path: str):
        self.path, self.offset = path, 0

    def read(self) -> List[Dict[str, Any]]:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return []
        if size < self.offset:
            self.offset = 0
        with open(self.path) as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]  # a half-written last line waits for the next poll
        self.offset += len(complete.encode())
        out = []
        for line in complete.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class DriverProgress(threading.Thread):
    """Renders rank 0's metrics on the driver: a tqdm bar on a terminal, plain lines otherwise.

    Used when the run directory is on the driver's disk; worker output then stays in Ray's logs, so
    the user sees rtune's progress and not Ray's log stream (e.g. a restarted worker's traceback).
    """

    def __init__(self, run_dir: str, max_steps: int, poll_s: float = 0.5, resume_step: Optional[int] = None):
        super().__init__(daemon=True)
        self.max_steps, self.poll_s = max_steps, poll_s
        self.metrics = _Tail(os.path.join(run_dir, METRICS_FILE))
        self.events = _Tail(os.path.join(run_dir, EVENTS_FILE))
        for tail in (self.metrics, self.events):  # only what this invocation writes
            tail.offset = os.path.getsize(tail.path) if os.path.exists(tail.path) else 0
        # A resumed run trims metrics.jsonl back to its checkpoint, which sends the tail back to the start of
        # the file: everything up to the resume step was shown by the earlier attempt and is not replayed.
        self.last_step = -1 if resume_step is None else resume_step
        self._stop_event = threading.Event()
        self.bar = None
        if sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=max_steps, desc="rtune", unit="step", dynamic_ncols=True)

    def _say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def poll(self) -> None:
        for event in self.events.read():
            self._say(f"[rtune] {event.get('message', '')}")
        for record in self.metrics.read():
            step = record.get("step", 0)
            if step <= self.last_step:
                continue  # re-read after a resume (a re-run, or a worker restart) trimmed the file
            self.last_step = max(self.last_step, step)
            if self.bar is not None:
                self.bar.n = step
                postfix = {"loss": f"{record['loss']:.3f}"} if "loss" in record else {}
                if "reward" in record:
                    postfix = {"reward": f"{record['reward']:.3f}"}
                postfix["tok/s"] = f"{record['tokens_per_s']:,.0f}"
                self.bar.set_postfix(postfix, refresh=True)
                if "eval_loss" in record or "eval_reward" in record:
                    self.bar.write("[rtune] " + format_record(record, self.max_steps))
            else:
                self._say("[rtune] " + format_record(record, self.max_steps))

    def run(self) -> None:
        while not self._stop_event.wait(self.poll_s):
            self.poll()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=5)
        self.poll()
        if self.bar is not None:
            self.bar.close()
