"""The generation engine `rtune generate`, `rtune eval`, evaluation during training, RL rollouts and serving share.

    engine.generate(prompt_ids, sampling) -> for each prompt, `sampling.n` Completions
        (token ids, text, per-token log-probs, finish reason)
    engine.load_weights(state)            -> the engine generates with new weights (a learner's)

Two backends behind that interface: `TransformersEngine` (CPU and GPU, the default: batched prompts with a KV
cache over any Hugging Face causal LM, a live one inside a training worker included) and `VLLMEngine`
(`engine_vllm.py`, GPU, the optional extra `rtune[vllm]`).

Conventions, the same for both backends:
- `logprobs[t]` is log p(token t | everything before) under the model itself: temperature 1, no top-p / top-k
  filtering (the distribution a training forward pass computes, which RL's ratios compare against);
- the token that stopped a completion (EOS, end-of-turn, a stop token) is its last token id and log-prob, and is
  not in its text; a stop string is cut from the text (and the tokens after it dropped); `stop_reason` says which;
- sampling is reproducible: completion j of a prompt draws its uniforms (one per token, inverse-CDF sampling) from a
  generator seeded by (seed, the prompt's token ids, j), so it does not depend on the batch it ran in, the batch
  size, or the other prompts.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import torch

from rtune.errors import UserError
from rtune.model import max_context


@dataclass(frozen=True)
class Sampling:
    """How to sample. temperature=0 is greedy decoding (n copies of the same completion).

    Args:
        max_new_tokens: Tokens to generate at most per completion.
        temperature: Softmax temperature; 0 picks the most likely token.
        top_p: Nucleus sampling: the smallest set of tokens whose probability reaches top_p.
        top_k: Sample among the k most likely tokens (0: all).
        n: Completions per prompt.
        seed: Seed of the sampling generators (see the module docstring).
        stop: Strings that end a completion (cut from its text).
        stop_token_ids: Token ids that end a completion, besides the model's EOS and end-of-turn tokens.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int = 0
    stop: Tuple[str, ...] = ()
    stop_token_ids: Tuple[int, ...] = ()

    def check(self) -> None:
        if self.max_new_tokens < 1 or self.n < 1:
            raise UserError(f"max_new_tokens and n must be at least 1, got {self.max_new_tokens} and {self.n}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise UserError(f"temperature must be >= 0 (got {self.temperature}), top_p in (0, 1] (got {self.top_p}) "
                            f"and top_k >= 0 (got {self.top_k})")


@dataclass
class Completion:
    token_ids: List[int]
    text: str
    logprobs: List[float]
    finish_reason: str  # "stop" (EOS, a stop token or a stop string) or "length"
    stop_reason: Optional[Union[int, str]] = None  # the stop token id or stop string, if one ended it


class Engine(Protocol):
    tokenizer: Any

    def generate(self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling) -> List[List[Completion]]:
        """For each prompt, `sampling.n` completions."""

    def load_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        """Generate with these weights from now on (names as in the model's state_dict)."""


def stop_token_ids_of(model, tokenizer) -> List[int]:
    """EOS and the chat template's end-of-turn token: what the model's generation config says ends a reply."""
    found = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = found if isinstance(found, list) else [found]
    return sorted({i for i in ids + [tokenizer.eos_token_id] if i is not None})


def sequence_seed(seed: int, prompt_ids: Sequence[int], j: int) -> int:
    """The seed of completion j of a prompt: independent of where the prompt is in a batch."""
    digest = hashlib.blake2b(f"{seed}|{j}|{','.join(map(str, prompt_ids))}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def encode_prompts(tokenizer, prompts: Sequence[Union[str, Sequence[Mapping[str, str]]]], chat: bool,
                   system: str = "") -> List[List[int]]:
    """Token ids of each prompt: plain text as the tokenizer encodes it, or (chat) a user turn (or a message list)
    rendered with the checkpoint's chat template, ready for the assistant's reply."""
    if chat and not getattr(tokenizer, "chat_template", None):
        raise UserError("this model has no chat template (it was not trained on a chat format): use plain prompts "
                        "(chat=false / eval.prompt_style=completion)")
    out = []
    for prompt in prompts:
        if chat:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            if system and messages[0].get("role") != "system":
                messages = [{"role": "system", "content": system}] + messages
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            if not isinstance(prompt, str):
                raise UserError("a message-list prompt needs chat=true (eval.prompt_style=chat)")
            out.append(tokenizer(prompt)["input_ids"])
    return out


@dataclass
class _Row:
    """One sequence being generated."""

    prompt: int  # index of its prompt in the request
    uniforms: Optional[torch.Tensor]  # one draw in [0, 1) per token it may generate (None: greedy)
    tokens: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    finish_reason: Optional[str] = None
    stop_reason: Optional[Union[int, str]] = None
    text: Optional[str] = None  # set when a stop string cut it


class TransformersEngine:
    """Batched generation with a KV cache over a Hugging Face causal LM (a peft model too).

    Args:
        model: The model (left as it is found: its training mode comes back after each call).
        tokenizer: Its tokenizer (a pad token is not needed: rows are left-padded with EOS, masked out).
        max_batch_size: Sequences (prompts x n) decoded together at most.
        lockstep: Always run max_new_tokens decode steps, even when every row has stopped: ranks of a sharded
            model (FSDP, ZeRO-3) gather weights collectively at every forward, so they must all run as many.
    """

    def __init__(self, model, tokenizer, max_batch_size: int = 16, lockstep: bool = False):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.lockstep = max_batch_size, lockstep
        self.stop_ids = stop_token_ids_of(model, tokenizer)
        self.context = max_context(model.config) if hasattr(model, "config") else None
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft keeps it inside
        # transformers renamed `past_key_values` to `cache` (5.2x); older models and versions take the old name
        self._cache_arg = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def load_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        self.model.load_state_dict(dict(state), strict=True)

    def generate(self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling,
                 seeds: Optional[Sequence[int]] = None) -> List[List[Completion]]:
        """seeds: one sampling seed per prompt instead of sampling.seed (requests of a server's batch each keep
        their own)."""
        sampling.check()
        if any(len(p) == 0 for p in prompt_ids):
            raise UserError("a prompt is empty: every prompt needs at least one token")
        per_call = max(1, self.max_batch_size // sampling.n)  # prompts per forward batch
        out: List[List[Completion]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(prompt_ids), per_call):
                    out += self._generate_batch([list(p) for p in prompt_ids[start:start + per_call]], sampling,
                                                None if seeds is None else list(seeds[start:start + per_call]))
        finally:
            self.model.train(was_training)
        return out

    def _generate_batch(self, prompts: List[List[int]], s: Sampling, seeds: Optional[List[int]] = None
                        ) -> List[List[Completion]]:
        rows: List[_Row] = []
        for rows in self._decode(prompts, s, seeds):  # noqa: B007 - the last yield holds the finished rows
            pass
        return [[self._completion(row) for row in rows[i * s.n:(i + 1) * s.n]] for i in range(len(prompts))]

    def stream(self, prompt_ids: Sequence[int], sampling: Sampling) -> Iterator[Tuple[str, Optional[Completion]]]:
        """One prompt, one completion, as it is generated: (new text, None) after each token whose text is settled,
        then ("", the whole Completion) at the end. The text deltas add up to the completion's text."""
        s = replace(sampling, n=1)
        s.check()
        if not prompt_ids:
            raise UserError("a prompt is empty: every prompt needs at least one token")
        was_training = self.model.training
        self.model.eval()
        sent = ""
        try:
            for rows in self._decode([list(prompt_ids)], s):
                row = rows[0]
                if row.finish_reason is not None:
                    break
                settled = settled_text(self.tokenizer.decode(row.tokens, skip_special_tokens=True), sent, s.stop)
                if len(settled) > len(sent):
                    yield settled[len(sent):], None
                    sent = settled
        finally:
            self.model.train(was_training)
        completion = self._completion(rows[0])
        if completion.text.startswith(sent) and len(completion.text) > len(sent):
            yield completion.text[len(sent):], None
        yield "", completion

    def _decode(self, prompts: List[List[int]], s: Sampling, seeds: Optional[List[int]] = None
                ) -> Iterator[List[_Row]]:
        """The rows being generated, yielded after every decode step (the last yield holds the finished rows)."""
        device, pad = self.device, self.tokenizer.eos_token_id
        width = max(len(p) for p in prompts)
        if self.context is not None:  # learned positions end somewhere: a completion stops there ("length")
            if width >= self.context:
                raise UserError(f"a prompt of {width} tokens does not fit the model's context of {self.context} "
                                "tokens: shorten it")
            s = replace(s, max_new_tokens=min(s.max_new_tokens, self.context - width))
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every prompt ends at the last column
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():  # here, not around a caller's loop: grad mode is per thread and must not span a yield
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache, logits = _cache_of(out), out.logits[:, -1].float()
        if s.n > 1:  # the prompt is encoded once; its cache is shared by its n completions
            cache.batch_repeat_interleave(s.n)
            logits, mask = logits.repeat_interleave(s.n, 0), mask.repeat_interleave(s.n, 0)
            positions = positions.repeat_interleave(s.n, 0)
        seeds = seeds or [s.seed] * len(prompts)
        rows = [_Row(i // s.n, self._uniforms(replace(s, seed=seeds[i // s.n]), prompts[i // s.n], i % s.n))
                for i in range(len(prompts) * s.n)]
        # steps x rows, so that a step's draws are contiguous
        draws = torch.stack([row.uniforms for row in rows], dim=1) if s.temperature > 0 else None
        stop_ids = set(self.stop_ids) | set(s.stop_token_ids)
        next_position = positions[:, -1:] + 1
        for step in range(s.max_new_tokens):
            logprobs = torch.log_softmax(logits, dim=-1)
            chosen = self._choose(logits, None if draws is None else draws[step], s)
            for i, row in enumerate(rows):
                if row.finish_reason is None:
                    token = int(chosen[i])
                    row.tokens.append(token)
                    row.logprobs.append(float(logprobs[i, token]))
                    self._check_stop(row, token, stop_ids, s)
            if all(row.finish_reason is not None for row in rows) and not self.lockstep:
                break
            if step == s.max_new_tokens - 1:
                break
            yield rows
            feed = torch.tensor([[row.tokens[-1] if row.finish_reason is None else pad] for row in rows], device=device)
            mask = torch.cat([mask, torch.ones_like(feed)], dim=1)
            with torch.no_grad():
                out = self.model(input_ids=feed, attention_mask=mask, position_ids=next_position, use_cache=True,
                                 **{self._cache_arg: cache})
            cache, logits, next_position = _cache_of(out), out.logits[:, -1].float(), next_position + 1
        yield rows

    @staticmethod
    def _uniforms(s: Sampling, prompt: List[int], j: int) -> Optional[torch.Tensor]:
        if s.temperature == 0:
            return None
        generator = torch.Generator().manual_seed(sequence_seed(s.seed, prompt, j))
        return torch.rand(s.max_new_tokens, generator=generator, dtype=torch.float64)

    @staticmethod
    def _choose(logits: torch.Tensor, uniforms: Optional[torch.Tensor], s: Sampling) -> torch.Tensor:
        """The next token of every row: the argmax at temperature 0, else the filtered distribution's inverse CDF at
        the row's own uniform draw (one vectorised search for the whole batch)."""
        if s.temperature == 0:
            return logits.argmax(-1).cpu()
        scores = logits / s.temperature
        if s.top_k:
            kth = torch.topk(scores, min(s.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if s.top_p < 1.0:
            sorted_scores, order = scores.sort(dim=-1, descending=True)
            cumulative = sorted_scores.softmax(-1).cumsum(-1)
            drop = cumulative - sorted_scores.softmax(-1) >= s.top_p  # keep the first token that reaches top_p
            scores = scores.scatter(-1, order, sorted_scores.masked_fill(drop, float("-inf")))
        cdf = scores.double().softmax(-1).cumsum(-1).cpu()
        cdf = cdf / cdf[:, -1:]  # ends at exactly 1, so every draw in [0, 1) lands on a token
        # the first token whose CDF passes the draw: tokens of probability 0 (filtered) are never chosen
        return torch.searchsorted(cdf, uniforms[:, None], right=True).squeeze(1).clamp(max=cdf.shape[-1] - 1)

    def _check_stop(self, row: _Row, token: int, stop_ids: set, s: Sampling) -> None:
        if token in stop_ids:
            row.finish_reason, row.stop_reason = "stop", token
            return
        if s.stop:
            # a stop string ends within the last few tokens: decode a tail a little longer than the longest
            tail = self.tokenizer.decode(row.tokens[-(max(map(len, s.stop)) + 2):], skip_special_tokens=True)
            if any(stop in tail for stop in s.stop):
                self._cut_at_stop_string(row, s.stop)
                return
        if len(row.tokens) == s.max_new_tokens:
            row.finish_reason = "length"

    def _cut_at_stop_string(self, row: _Row, stops: Sequence[str]) -> None:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        at, stop = min((text.find(stop), stop) for stop in stops if stop in text)
        keep = len(row.tokens)  # the fewest tokens whose text reaches the end of the stop string
        while keep > 1 and len(self.tokenizer.decode(row.tokens[:keep - 1], skip_special_tokens=True)) >= \
                at + len(stop):
            keep -= 1
        row.tokens, row.logprobs = row.tokens[:keep], row.logprobs[:keep]
        row.text, row.finish_reason, row.stop_reason = text[:at], "stop", stop

    def _completion(self, row: _Row) -> Completion:
        text = row.text
        if text is None:
            shown = row.tokens[:-1] if isinstance(row.stop_reason, int) else row.tokens
            text = self.tokenizer.decode(shown, skip_special_tokens=True)
        return Completion(row.tokens, text, row.logprobs, row.finish_reason or "length", row.stop_reason)


def settled_text(text: str, sent: str, stops: Sequence[str]) -> str:
    """What a stream may send of a completion's text so far: it holds back a possibly incomplete character and
    anything a stop string may yet cut (and never takes back what was sent)."""
    settled = text[:max(len(sent), len(text) - max([len(x) for x in stops] + [1]))]
    return settled[:-1] if settled.endswith("\ufffd") and len(settled) > len(sent) else settled


def _cache_of(out):
    return out["cache"] if "cache" in out else out["past_key_values"]
