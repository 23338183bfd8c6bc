"""Peak memory of one training step with a large vocabulary: the model's own loss vs rtune's chunked loss.

The probe: a Qwen2-shaped model (hidden 64, 2 layers, grouped-query attention, tied embeddings) with
Qwen's 151,646-token vocabulary (~9.8M parameters, nearly all of them the embedding), one forward +
backward of 4 x 1024 tokens on the CPU. The model's own loss materialises the fp32 logits of every
token ([4096, 151646] = 2.5 GB) plus their log-softmax and gradient; rtune's `TokenLogprobs` computes
them in chunks under activation checkpointing. Each mode runs in a fresh process; peak resident memory
(VmHWM) is measured around the step alone and for the whole process.

    python scripts/bench/vocab_memory.py          # writes results/benchmarks/vocab_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import machine, write_json  # noqa: E402

OUT = os.path.join(ROOT, "results", "benchmarks", "vocab_memory.json")
VOCAB, BATCH, SEQ = 151_646, 4, 1024
THREADS = 2  # torch threads of each mode's process


def child(mode: str) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rtune.memory import peak_rss_mb, reset_peak_rss
    from rtune.tokens import chunk_tokens_for
    from rtune.worker.lm import TokenLogprobs

    torch.manual_seed(0)
    config = AutoConfig.for_model("qwen2", vocab_size=VOCAB, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ,
                                  tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_config(config)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    positions = torch.arange(SEQ).expand(BATCH, -1)
    params = sum(p.numel() for p in model.parameters())
    before = peak_rss_mb()
    reset_peak_rss()
    start = time.perf_counter()
    if mode == "plain":
        loss = model(input_ids=ids, labels=ids, position_ids=positions, use_cache=False).loss
    else:
        logprobs = TokenLogprobs(model)(ids, ids, positions)
        loss = -logprobs.sum() / (BATCH * (SEQ - 1))
    loss.backward()
    seconds = time.perf_counter() - start
    return {"mode": mode, "loss": loss.item(), "params": params, "rss_before_step_mb": round(before),
            "peak_rss_mb": round(peak_rss_mb()), "step_s": round(seconds, 2),
            "chunk_tokens": chunk_tokens_for(VOCAB) if mode == "chunked" else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=["plain", "chunked"])
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    runs = {}
    for mode in ("plain", "chunked"):
        proc = subprocess.run([sys.executable, __file__, "--child", mode], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(runs[mode])
    result = {
        "what": f"one forward+backward, {BATCH} x {SEQ} tokens, vocabulary {VOCAB:,}, Qwen2-shaped model of "
                f"{runs['plain']['params']:,} parameters, fp32, CPU; peak RSS of the step's process (VmHWM)",
        "machine": machine(), "torch_threads": THREADS,
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
        "same_loss": abs(runs["plain"]["loss"] - runs["chunked"]["loss"]) < 1e-4,
        "peak_ratio_plain_over_chunked": round(runs["plain"]["peak_rss_mb"] / runs["chunked"]["peak_rss_mb"], 2),
    }
    out = write_json(result, args.out, smoke=False)
    print(f"peak {runs['plain']['peak_rss_mb']} MB -> {runs['chunked']['peak_rss_mb']} MB "
          f"({result['peak_ratio_plain_over_chunked']}x lower), same loss: {result['same_loss']} -> {out}")


if __name__ == "__main__":
    main()
