"""Continuous batching (rtune/live_batch.py): requests that join and leave a running batch at random steps get the
completions `engine.generate` gives each alone, token for token, with its log-probs, on GPT-2 and Llama twins."""

from __future__ import annotations

import random

import pytest
import torch
import transformers

from rtune.engine import Sampling, TransformersEngine
from rtune.live_batch import LiveBatch

SHAPES = {
    "gpt2": dict(n_layer=2, n_embd=64, n_head=2, n_positions=128),
    "llama": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128),
}


class _Tokenizer:
    """Ids as text: enough for the engine (no stop strings here)."""

    eos_token_id = 1

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_rows_joining_and_leaving_get_what_they_get_alone(kind):
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(kind, vocab_size=200, bos_token_id=0, eos_token_id=1, **SHAPES[kind])
    engine = TransformersEngine(transformers.AutoModelForCausalLM.from_config(config).eval(), _Tokenizer())
    rng = random.Random(0)
    prompts = [[rng.randrange(2, 200) for _ in range(rng.randrange(1, 20))] for _ in range(12)]
    samplings = [Sampling(max_new_tokens=rng.randrange(3, 25), temperature=rng.choice([0, 0.8, 1.2]),
                          top_p=rng.choice([1.0, 0.9]), n=rng.choice([1, 2])) for _ in prompts]
    alone = [engine.generate([p], s, seeds=[i])[0] for i, (p, s) in enumerate(zip(prompts, samplings))]

    batch, waiting, rows, widths = LiveBatch(engine, max_rows=6), list(range(len(prompts))), {}, set()
    while waiting or not batch.empty:
        while waiting and batch.room(samplings[waiting[0]].n) and rng.random() < 0.5:
            i = waiting.pop(0)
            rows[i] = batch.add(prompts[i], samplings[i], seed=i)
        batch.step()
        widths.add(len(batch.rows))
    assert max(widths) > 2 and len(widths) > 3, "the batch never held rows of different ages"
    for i, expected in enumerate(alone):
        for live, want in zip(rows[i], expected):
            got = batch.completion(live)
            assert got.token_ids == want.token_ids, f"request {i}"
            assert got.finish_reason == want.finish_reason
            assert max(abs(a - b) for a, b in zip(got.logprobs, want.logprobs)) < 1e-4
    assert batch.mask is None and batch.cache is None  # every row left, nothing kept
