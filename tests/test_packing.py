"""Isolated packing leaks nothing: every sample in a packed row computes exactly what it computes alone.

Per architecture family (GPT-2's learned positions, Llama's RoPE + grouped-query attention, Qwen2's
biased projections + tied embeddings) and per attention implementation (eager, sdpa). Each test
also runs the same row *without* the per-sample position ids (the block-diagonal mask is then not
built) and checks that the samples after the first do change: the proof has teeth.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from rtune.data.packing import PAD, best_fit_decreasing, pack
from rtune.tokens import IGNORE
from rtune.worker.lm import TokenLogprobs

VOCAB = 300
FAMILIES = {
    "gpt2": dict(n_layer=2, n_embd=32, n_head=4, n_positions=128),
    "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False),
    "qwen2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True),
}

# Gemma-2 soft-caps its final logits (c * tanh(logits / c)); the chunked loss must apply the cap as its forward does.
SOFTCAPPED = {"gemma2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                             final_logit_softcapping=2.0)}


def tiny_model(family: str, attn: str, vocab: int = VOCAB):
    torch.manual_seed(0)
    config = AutoConfig.for_model(family, vocab_size=vocab, bos_token_id=0, eos_token_id=0,
                                  **{**FAMILIES, **SOFTCAPPED}[family])
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def logits_of(model, ids, positions):
    wrapped = TokenLogprobs(model)
    hidden = wrapped.hidden_states(ids, positions)
    return model.get_output_embeddings()(hidden)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_packed_sample_equals_the_sample_alone(family, attn):
    model = tiny_model(family, attn)
    gen = torch.Generator().manual_seed(1)
    samples = [torch.randint(1, VOCAB, (n,), generator=gen).tolist() for n in (9, 5, 12, 3)]
    labels = [list(s) for s in samples]
    rows = pack(samples, labels, 32, "isolated")
    ids = torch.from_numpy(rows.arrays["input_ids"].astype(np.int64))
    positions = torch.from_numpy(rows.arrays["position_ids"].astype(np.int64))
    row_labels = torch.from_numpy(rows.arrays["labels"].astype(np.int64))
    assert ids.shape[0] == 1  # all four share one row
    ids = ids.masked_fill(ids == PAD, 0)
    with torch.no_grad():
        packed = logits_of(model, ids, positions)[0]
        leaky = logits_of(model, ids, torch.arange(32).unsqueeze(0))[0]  # no sample boundaries: a plain causal row
        packed_logprobs = TokenLogprobs(model)(ids, row_labels, positions)[0]
        n_real = sum(len(s) for s in samples)
        starts = [i for i in (positions[0] == 0).nonzero().squeeze(1).tolist() if i < n_real]
        changed = 0
        for start, end in zip(starts, starts[1:] + [n_real]):
            alone_ids, alone_positions = ids[:, start:end], torch.arange(end - start).unsqueeze(0)
            alone = logits_of(model, alone_ids, alone_positions)[0]
            torch.testing.assert_close(packed[start:end], alone, atol=1e-5, rtol=1e-5)
            alone_logprobs = TokenLogprobs(model)(alone_ids, alone_ids, alone_positions)[0]
            # the sample's loss: every token but its first (nothing of the sample precedes that one)
            torch.testing.assert_close(packed_logprobs[start + 1:end], alone_logprobs[1:], atol=1e-5, rtol=1e-5)
            assert packed_logprobs[start] == 0  # the first token of a sample is never a target
            if start > 0 and not torch.allclose(leaky[start:end], alone, atol=1e-4):
                changed += 1
        assert changed == len(samples) - 1, "without the position ids the later samples must see the earlier ones"


def test_flattened_rows_equal_batched_rows():
    """The flash-attention path runs a batch as one [1, B*T] row; on the CPU it must give the same result."""
    model = tiny_model("llama", "sdpa")
    gen = torch.Generator().manual_seed(2)
    samples = [torch.randint(1, VOCAB, (n,), generator=gen).tolist() for n in (10, 6, 14, 9, 4, 11)]
    rows = pack(samples, samples, 24, "isolated")
    ids = torch.from_numpy(rows.arrays["input_ids"].astype(np.int64))
    ids = ids.masked_fill(ids == PAD, 0)
    labels = torch.from_numpy(rows.arrays["labels"].astype(np.int64))
    positions = torch.from_numpy(rows.arrays["position_ids"].astype(np.int64))
    assert ids.shape[0] > 1
    with torch.no_grad():
        batched = TokenLogprobs(model, flatten_rows=False)(ids, labels, positions)
        flat = TokenLogprobs(model, flatten_rows=True)(ids, labels, positions)
    torch.testing.assert_close(flat, batched, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_tokens", [7, 8])  # 105 target tokens: 15 whole chunks, or 13 and a last one of 1
@pytest.mark.parametrize("family", list(FAMILIES) + list(SOFTCAPPED))
def test_chunked_loss_equals_the_plain_loss_value_and_gradients(family, chunk_tokens):
    """A large vocabulary, logits in chunks: same loss and gradients as the model's own loss (Gemma-2's soft-capped
    logits too), to 1e-5 for the loss and 1e-5 absolute / 1e-4 relative for every gradient."""
    model = tiny_model(family, "eager" if family in SOFTCAPPED else "sdpa", vocab=5000).train()
    torch.manual_seed(3)
    ids = torch.randint(1, 5000, (3, 40))
    labels = ids.clone()
    labels[:, :5] = IGNORE  # a prompt that carries no loss
    positions = torch.arange(40).expand(3, -1)
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(4)
    plain = model(input_ids=ids, labels=labels, position_ids=positions, use_cache=False).loss
    plain.backward()
    plain_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(4)  # the same dropout masks
    wrapped = TokenLogprobs(model, chunk_tokens=chunk_tokens)
    assert (labels[:, 1:] != IGNORE).sum() % chunk_tokens == (0 if chunk_tokens == 7 else 1)
    assert (wrapped.softcap is not None) == (family in SOFTCAPPED)
    logprobs = wrapped(ids, labels, positions)
    chunked = -logprobs.sum() / (labels[:, 1:] != IGNORE).sum()
    chunked.backward()
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def _reference_bfd(lengths, capacity):
    """The textbook O(n^2) best-fit-decreasing, to check the fast one against."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins, rooms = [], []
    for i in order:
        fits = [b for b in range(len(bins)) if rooms[b] >= lengths[i]]
        if fits:
            b = min(fits, key=lambda b: (rooms[b], -b))
        else:
            b = len(bins)
            bins.append([])
            rooms.append(capacity)
        bins[b].append(i)
        rooms[b] -= lengths[i]
    return sorted(sorted(x) for x in bins)


@pytest.mark.parametrize("seed", range(5))
def test_best_fit_decreasing_places_every_sample_once_and_matches_the_textbook(seed):
    rng = random.Random(seed)
    capacity = rng.choice([16, 64, 512])
    lengths = [rng.randint(1, capacity) for _ in range(rng.randint(1, 400))]
    bins = best_fit_decreasing(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    assert len(bins) == len(_reference_bfd(lengths, capacity))
    assert len(bins) <= -(-sum(lengths) * 11 // (9 * capacity)) + 1  # BFD's 11/9 OPT + 1 bound (OPT >= sum/cap)


def test_isolated_rows_hold_whole_samples_and_concat_rows_stream():
    samples = [[1] * 5, [2] * 7, [3] * 3, [4] * 8]
    labels = [[IGNORE, IGNORE, 1, 1, 1], [2] * 7, [3] * 3, [IGNORE] * 8]
    iso = pack(samples, labels, 10, "isolated")
    rows = iso.arrays["input_ids"]
    for row, pos in zip(rows, iso.arrays["position_ids"]):
        used = int((row != PAD).sum())
        starts = [i for i in range(used) if pos[i] == 0] + [used]
        for a, b in zip(starts, starts[1:]):  # positions restart exactly where a whole sample begins
            assert row[a:b].tolist() in samples and pos[a:b].tolist() == list(range(b - a))
    flat = [t for t in rows.reshape(-1).tolist() if t != PAD]
    assert sorted(flat) == sorted(t for s in samples for t in s)  # every token once, none cut
    assert iso.target_tokens == 3 + 6 + 2  # first token of each sample and prompt tokens carry no loss
    none = pack(samples, labels, 10, "none")
    assert none.n_rows == 4 and "position_ids" not in none.arrays
    concat = pack(samples, labels, 10, "concat")
    assert concat.n_rows == 3 and concat.arrays["input_ids"][0].tolist() == [1] * 5 + [2] * 5
