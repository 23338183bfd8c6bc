"""The model replica of `rtune serve` (a Ray Serve deployment; see serve.py for the application around it).

Requests join one running batch (continuous batching, rtune/live_batch.py) that a single scheduler task steps, one
decode step at a time, taking in new requests between steps; so a replica's batch stays full however requests arrive,
and a short request does not wait for a long one. The batch holds one model (the base or one LoRA adapter) at a time:
when the oldest waiting request is another model's, the batch drains, then switches. Serve routes each request to a
replica that has its adapter (`multiplexed_model_id`), so with several replicas switching is rare.
"""

import asyncio
import collections
import contextlib
from typing import Any, Deque, Dict, List, Optional

from ray import serve

BASE = ""  # the multiplexed id of the base model (no adapter)


class ModelReplica:
    """One copy of the model: the base, with each adapter loaded on first use (see the module docstring)."""

    def __init__(self, model_path: str, adapters: Dict[str, str], threads: int, max_batch_size: int):
        import torch

        from rtune.inference import load_engine
        from rtune.live_batch import LiveBatch

        torch.set_num_threads(max(1, threads))
        self.engine = load_engine(model_path, max_batch_size=max_batch_size)
        self.adapters = adapters
        self.batch = LiveBatch(self.engine, max_rows=max_batch_size)
        self.waiting: Deque[_Request] = collections.deque()
        self.active: Optional[str] = None  # the model the running batch decodes (BASE or an adapter's name)
        self.base_context = contextlib.ExitStack()  # holds peft's disable_adapter() while the base is active
        self.wakeup = asyncio.Event()
        self.scheduler: Optional[asyncio.Task] = None

    def _attach(self, name: str) -> "_Adapter":
        from peft import PeftModel

        model, path = self.engine.model, self.adapters[name]
        if isinstance(model, PeftModel):
            model.load_adapter(path, adapter_name=name)
        else:
            self.engine.model = PeftModel.from_pretrained(model, path, adapter_name=name).eval()
        return _Adapter(self.engine.model, name)

    async def _submit(self, prompt_ids: List[int], sampling: Dict[str, Any]) -> "_Request":
        from rtune.engine import Sampling

        name = serve.get_multiplexed_model_id()
        if name != BASE:
            await self.adapter(name)  # Serve's multiplexing: loaded on first use, least recently used evicted
        request = _Request(name, prompt_ids, Sampling(**{k: v for k, v in sampling.items() if k != "seed"}),
                           sampling["seed"])
        self.waiting.append(request)
        self.wakeup.set()
        if self.scheduler is None or self.scheduler.done():
            self.scheduler = asyncio.get_running_loop().create_task(self._schedule())
        return request

    async def generate(self, prompt_ids: List[int], sampling: Dict[str, Any]) -> List[Dict[str, Any]]:
        request = await self._submit(prompt_ids, sampling)
        while not request.finished:
            await request.update()
        return [{"text": c.text, "tokens": len(c.token_ids), "finish_reason": c.finish_reason}
                for c in request.completions()]

    async def stream(self, prompt_ids: List[int], sampling: Dict[str, Any]):
        """(text delta, None) ... then ("", {"tokens", "finish_reason"})."""
        from rtune.engine import settled_text

        request = await self._submit(prompt_ids, sampling)
        sent, stops = "", request.sampling.stop
        while not request.finished:
            await request.update()
            if not request.finished:
                row = request.rows[0].row
                settled = settled_text(self.engine.tokenizer.decode(row.tokens, skip_special_tokens=True), sent, stops)
                if len(settled) > len(sent):
                    yield settled[len(sent):], None
                    sent = settled
        completion = request.completions()[0]
        if completion.text.startswith(sent) and len(completion.text) > len(sent):
            yield completion.text[len(sent):], None
        yield "", {"tokens": len(completion.token_ids), "finish_reason": completion.finish_reason}

    async def _schedule(self) -> None:
        """The one task that steps the batch (see the class docstring)."""
        while True:
            if not self.waiting and self.batch.empty:
                self.wakeup.clear()
                await self.wakeup.wait()
            self._admit()
            try:
                stepped = self.batch.step()
            except Exception as err:  # noqa: BLE001 - fail the batch's requests, keep serving the next ones
                stepped = self.batch.fail()
                for live in stepped:
                    live.error = err
            for request in {id(live.request): live.request for live in stepped}.values():
                request.notify()
            await asyncio.sleep(0)  # take in the requests that arrived during the step

    def _admit(self) -> None:
        """Waiting requests of the active model join while there is room; an empty batch switches model first."""
        if self.batch.empty and self.waiting and self.waiting[0].model != self.active:
            try:
                self._activate(self.waiting[0].model)
            except Exception as err:  # noqa: BLE001 - that request fails, the others go on
                self.waiting.popleft().fail(err)
                return
        while self.waiting and self.waiting[0].model == self.active and self.batch.room(self.waiting[0].n):
            request = self.waiting.popleft()
            try:
                request.rows = self.batch.add(request.prompt_ids, request.sampling, request.seed)
            except Exception as err:  # noqa: BLE001
                request.fail(err)
                continue
            request.batch = self.batch
            for live in request.rows:
                live.request = request

    def _activate(self, name: str) -> None:
        self.base_context.close()
        model = self.engine.model
        if name == BASE:
            if hasattr(model, "disable_adapter"):
                self.base_context.enter_context(model.disable_adapter())
        else:
            model.set_adapter(name)
        self.active = name


class _Request:
    """A request's rows in the batch, and an event set whenever they get tokens."""

    def __init__(self, model: str, prompt_ids: List[int], sampling, seed: int):
        self.model, self.prompt_ids, self.sampling, self.seed = model, prompt_ids, sampling, seed
        self.n = sampling.n
        self.rows: List[Any] = []
        self.batch = None
        self.error: Optional[BaseException] = None
        self.changed = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self.error is not None or (bool(self.rows) and all(live.done or live.error for live in self.rows))

    def notify(self) -> None:
        self.changed.set()

    def fail(self, err: BaseException) -> None:
        self.error = err
        self.notify()

    async def update(self) -> None:
        await self.changed.wait()
        self.changed.clear()

    def completions(self):
        for err in [self.error] + [live.error for live in self.rows]:
            if err is not None:
                raise err
        return [self.batch.completion(live) for live in self.rows]


class _Adapter:
    """A loaded adapter; Serve's LRU eviction drops it, and with it the adapter's weights."""

    def __init__(self, model, name: str):
        self.model, self.name = model, name

    def __del__(self):
        try:
            self.model.delete_adapter(self.name)
        except Exception:  # noqa: BLE001 - the replica is going away anyway
            pass
