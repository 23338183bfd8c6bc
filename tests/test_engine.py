"""The generation engine against transformers' own generate and forward pass, on tiny models built from config."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from rtune.engine import Sampling, TransformersEngine, encode_prompts
from rtune.errors import UserError
from rtune.model import train_bpe_tokenizer

FAMILIES = {
    "gpt2": dict(n_layer=2, n_embd=64, n_head=4, n_positions=256),
    "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256),
}
PROMPTS = ["fn main() {", "pub fn add(a: i32, b: i32) -> i32 {", "let"]  # ragged: 4, 15 and 1 tokens or so


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = ["fn main() { let x = 1; }", "pub fn add(a: i32, b: i32) -> i32 { a + b }", "let y = x * 2;"] * 40
    return train_bpe_tokenizer(texts, 400, str(tmp_path_factory.mktemp("tok") / "bpe"))


def tiny(family, tokenizer):
    torch.manual_seed(0)
    config = AutoConfig.for_model(family, vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, **FAMILIES[family])
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_greedy_equals_transformers_generate_token_for_token(family, tokenizer):
    """Batched, ragged (left-padded) prompts, n=2 each sharing the prompt's cache: each completion is the token
    sequence `model.generate` gives the prompt alone, and its log-probs are a plain forward pass's to 1e-5."""
    model = tiny(family, tokenizer)
    engine = TransformersEngine(model, tokenizer, max_batch_size=6)
    ids = encode_prompts(tokenizer, PROMPTS, chat=False)
    assert len({len(p) for p in ids}) == 3
    out = engine.generate(ids, Sampling(max_new_tokens=24, n=2))
    for prompt, completions in zip(ids, out):
        alone = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                               pad_token_id=tokenizer.eos_token_id)[0, len(prompt):].tolist()
        first, second = completions
        assert first.token_ids == alone[:len(first.token_ids)] and second.token_ids == first.token_ids
        assert first.finish_reason in ("length", "stop") and len(first.token_ids) == len(first.logprobs)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + first.token_ids])).logits[0].float()
        expected = torch.log_softmax(logits, -1)[len(prompt) - 1:-1].gather(1, torch.tensor(first.token_ids)[:, None])
        torch.testing.assert_close(torch.tensor(first.logprobs), expected[:, 0], atol=1e-5, rtol=0)


def test_sampling_is_reproducible_whatever_the_batch(tokenizer):
    model = tiny("llama", tokenizer)
    ids = encode_prompts(tokenizer, PROMPTS, chat=False)
    sampling = Sampling(max_new_tokens=16, n=3, temperature=1.0, top_p=0.9, top_k=50, seed=7)
    together = TransformersEngine(model, tokenizer, max_batch_size=9).generate(ids, sampling)
    apart = [TransformersEngine(model, tokenizer, max_batch_size=3).generate([p], sampling)[0] for p in ids[::-1]][::-1]
    assert [[c.token_ids for c in per] for per in together] == [[c.token_ids for c in per] for per in apart]
    assert len({tuple(c.token_ids) for c in together[0]}) > 1  # the n samples differ
    other_seed = TransformersEngine(model, tokenizer).generate(ids, Sampling(**{**sampling.__dict__, "seed": 8}))
    assert [c.token_ids for c in other_seed[0]] != [c.token_ids for c in together[0]]


def test_stop_tokens_and_stop_strings_end_a_completion(tokenizer):
    model = tiny("gpt2", tokenizer)
    engine = TransformersEngine(model, tokenizer)
    ids = encode_prompts(tokenizer, ["fn main() {"], chat=False)
    free = engine.generate(ids, Sampling(max_new_tokens=12))[0][0]
    assert free.finish_reason == "length" and len(free.token_ids) == 12
    stop_token = free.token_ids[3]
    first_at = free.token_ids.index(stop_token)
    by_token = engine.generate(ids, Sampling(max_new_tokens=12, stop_token_ids=(stop_token,)))[0][0]
    assert by_token.finish_reason == "stop" and by_token.stop_reason == stop_token
    assert by_token.token_ids == free.token_ids[:first_at + 1]  # the stopping token is the last one
    assert by_token.text == tokenizer.decode(free.token_ids[:first_at], skip_special_tokens=True)
    stop_text = tokenizer.decode(free.token_ids[5:7], skip_special_tokens=True)
    by_string = engine.generate(ids, Sampling(max_new_tokens=12, stop=(stop_text,)))[0][0]
    assert by_string.finish_reason == "stop" and by_string.stop_reason == stop_text
    full = tokenizer.decode(free.token_ids, skip_special_tokens=True)
    assert by_string.text == full[:full.find(stop_text)] and stop_text not in by_string.text


def test_bad_sampling_and_chat_without_a_template_are_one_line(tokenizer):
    engine = TransformersEngine(tiny("gpt2", tokenizer), tokenizer)
    with pytest.raises(UserError, match="top_p in"):
        engine.generate([[1, 2]], Sampling(top_p=1.5))
    with pytest.raises(UserError, match="no chat template"):
        encode_prompts(tokenizer, ["hi"], chat=True)
    with pytest.raises(UserError, match="prompt is empty"):
        engine.generate([[]], Sampling())


def test_the_vllm_backend_composes_validates_and_says_what_it_needs(tmp_path):
    import importlib.util

    from conftest import compose

    from rtune.config import validate
    from rtune.inference import load_engine

    validate(compose("generation.backend=vllm", "use_gpu=true", "generation.vllm_gpu_memory_utilization=0.5",
                     "generation.num_actors=2"))
    with pytest.raises(UserError, match="generation.backend must be transformers or vllm, got 'sglang'"):
        validate(compose("generation.backend=sglang"))
    if importlib.util.find_spec("vllm") is None:  # CPU machines: the one line that names the fix
        with pytest.raises(UserError, match=r"needs vLLM: pip install 'rtune\[vllm\]'"):
            load_engine(str(tmp_path), backend="vllm")


def test_inverse_cdf_sampling_follows_the_filtered_distribution():
    """Each row's own uniforms through the CDF: frequencies match softmax(logits / T), top-k / top-p drop the tail."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    uniforms = torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    chosen = TransformersEngine._choose(logits, uniforms, Sampling(temperature=0.7))
    expected = torch.softmax(logits[0] / 0.7, -1)
    observed = torch.bincount(chosen, minlength=4).double() / len(chosen)
    assert torch.allclose(observed, expected.double(), atol=0.01), (observed, expected)
    top_k = TransformersEngine._choose(logits, uniforms, Sampling(temperature=1.0, top_k=2))
    assert set(top_k.tolist()) == {0, 1}
    top_p = TransformersEngine._choose(logits, uniforms, Sampling(temperature=1.0, top_p=0.5))
    assert set(top_p.tolist()) == {0}  # the first token already holds 64% of the mass
