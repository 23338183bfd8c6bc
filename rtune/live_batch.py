"""Continuous batching over the shared engine: requests join the running batch at any decode step and leave it when
they finish, so a server keeps its batch full however its requests arrive (static batches would wait for the slowest
and start with whoever happened to be queued).

    batch = LiveBatch(engine, max_rows=16)
    rows = batch.add(prompt_ids, sampling, seed)   # n rows; they join at the next step
    while not batch.empty:
        for row in batch.step(): ...               # rows that got a token (row.done once finished)

Each row is decoded as `engine.generate` decodes it (its own position ids, its own uniforms seeded by (seed, prompt,
j), its own stop rules), so a request's completion does not depend on who it shared steps with, up to the float noise
of padding. Rows of different lengths share one KV cache: newcomers are prefilled together, then the shorter of the
two caches is left-padded (masked) to the longer; finished rows are dropped and the columns no row needs are cut.
Models whose cache is not a plain DynamicCache (sliding-window layers) fall back to admitting only into an empty batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, List, Optional, Sequence

import torch
import torch.nn.functional as F

from rtune.engine import Completion, Sampling, TransformersEngine, _cache_of, _Row


@dataclass
class LiveRow:
    """One completion being generated for a request."""

    prompt_ids: List[int]
    sampling: Sampling  # n=1; max_new_tokens already capped by the model's context
    row: _Row
    done: bool = False
    request: Any = None  # whatever the caller ties the row to (a server's request)
    error: Optional[BaseException] = None  # set when the step it was in failed

    @property
    def tokens(self) -> List[int]:
        return self.row.tokens


class LiveBatch:
    """The running batch of one model (see the module docstring)."""

    def __init__(self, engine: TransformersEngine, max_rows: int):
        self.engine, self.max_rows = engine, max_rows
        self.rows: List[LiveRow] = []  # running, in the cache's batch order
        self.joining: List[LiveRow] = []  # added, prefilled at the next step
        self.cache = self.mask = self.positions = self.logits = None
        self.joinable = True  # False once a model's cache shows sliding-window layers

    @property
    def empty(self) -> bool:
        return not self.rows and not self.joining

    def room(self, n: int) -> bool:
        """Whether n more rows may join now (a request larger than the batch runs alone)."""
        taken = len(self.rows) + len(self.joining)
        if taken == 0:
            return True
        return self.joinable and taken + n <= self.max_rows

    def add(self, prompt_ids: Sequence[int], sampling: Sampling, seed: int) -> List[LiveRow]:
        """`sampling.n` rows for one prompt; they join at the next step."""
        sampling.check()
        prompt = list(prompt_ids)
        if not prompt:
            raise ValueError("a prompt is empty")
        s = replace(sampling, n=1, seed=seed)
        if self.engine.context is not None:
            s = replace(s, max_new_tokens=max(1, min(s.max_new_tokens, self.engine.context - len(prompt))))
        rows = [LiveRow(prompt, s, _Row(0, self.engine._uniforms(s, prompt, j))) for j in range(sampling.n)]
        self.joining += rows
        return rows

    def step(self) -> List[LiveRow]:
        """Prefill the newcomers, choose every row's next token, drop the finished rows, then run one decode forward for
        the rest. Returns the rows that got a token this step."""
        if self.joining:
            self._prefill(self.joining)
            self.joining = []
        if not self.rows:
            return []
        chosen = self._choose()
        logprobs = torch.log_softmax(self.logits, dim=-1)
        stop_ids = set(self.engine.stop_ids)
        for i, live in enumerate(self.rows):
            token = int(chosen[i])
            live.row.tokens.append(token)
            live.row.logprobs.append(float(logprobs[i, token]))
            self.engine._check_stop(live.row, token, stop_ids | set(live.sampling.stop_token_ids), live.sampling)
            live.done = live.row.finish_reason is not None
        stepped = list(self.rows)
        self._drop([i for i, live in enumerate(self.rows) if not live.done])
        if self.rows:
            self._decode([live.row.tokens[-1] for live in self.rows])
        return stepped

    def completion(self, live: LiveRow) -> Completion:
        return self.engine._completion(live.row)

    def fail(self) -> List[LiveRow]:
        """Drop every row (after an error); returns them."""
        lost = self.rows + self.joining
        self.rows, self.joining = [], []
        self.cache = self.mask = self.positions = self.logits = None
        return lost

    # -- the shared cache ------------------------------------------------------------------------------------------

    def _prefill(self, rows: List[LiveRow]) -> None:
        device, pad = self.engine.device, self.engine.tokenizer.eos_token_id
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding, as engine.generate does
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            out = self.engine.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache, logits = _cache_of(out), out.logits[:, -1].float()
        self.joinable = self.joinable and all(not getattr(layer, "is_sliding", False) and hasattr(layer, "keys")
                                              for layer in getattr(cache, "layers", [None]))
        if not self.rows:
            self.cache, self.mask, self.positions, self.logits = cache, mask, positions[:, -1:] + 1, logits
        else:  # one cache for both: the shorter is left-padded (masked out) to the longer
            length = max(self.mask.shape[1], width)
            for old, new in zip(self.cache.layers, cache.layers):
                old.keys = torch.cat([_left_pad(old.keys, length), _left_pad(new.keys, length)])
                old.values = torch.cat([_left_pad(old.values, length), _left_pad(new.values, length)])
            self.mask = torch.cat([_left_pad(self.mask, length, dim=1), _left_pad(mask, length, dim=1)])
            self.positions = torch.cat([self.positions, positions[:, -1:] + 1])
            self.logits = torch.cat([self.logits, logits])
        self.rows += rows

    def _decode(self, tokens: List[int]) -> None:
        feed = torch.tensor([[t] for t in tokens], device=self.engine.device)
        self.mask = torch.cat([self.mask, torch.ones_like(feed)], dim=1)
        with torch.no_grad():
            out = self.engine.model(input_ids=feed, attention_mask=self.mask, position_ids=self.positions,
                                    use_cache=True, **{self.engine._cache_arg: self.cache})
        self.cache, self.logits, self.positions = _cache_of(out), out.logits[:, -1].float(), self.positions + 1

    def _drop(self, keep: List[int]) -> None:
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.positions = self.logits = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.mask, self.positions, self.logits = self.mask[index], self.positions[index], self.logits[index]
        first = int(self.mask.any(0).nonzero()[0])  # columns before it are padding for every row left
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, first:], layer.values[index, :, first:]

    def _choose(self) -> torch.Tensor:
        """Every row's next token, rows that sample alike chosen together (see TransformersEngine._choose)."""
        chosen = torch.empty(len(self.rows), dtype=torch.long)
        groups: dict = {}
        for i, live in enumerate(self.rows):
            s = live.sampling
            groups.setdefault((s.temperature, s.top_p, s.top_k), []).append(i)
        for (temperature, _, _), members in groups.items():
            s = self.rows[members[0]].sampling
            index = torch.tensor(members)
            draws = None if temperature == 0 else torch.stack(
                [self.rows[i].row.uniforms[len(self.rows[i].tokens)] for i in members])
            chosen[index] = self.engine._choose(self.logits[index.to(self.logits.device)], draws, s)
        return chosen


def _left_pad(t: torch.Tensor, length: int, dim: int = 2) -> torch.Tensor:
    """Zeros before t along dim (the sequence axis: 2 for keys and values, 1 for a mask) up to length."""
    missing = length - t.shape[dim]
    if missing == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + [missing, 0]
    return F.pad(t, pad)
