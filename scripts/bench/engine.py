"""The generation engine's throughput: one batched call vs what a user would otherwise write, a loop of one-prompt
`model.generate` calls. Same model, same prompts, greedy decoding (so both produce the same tokens: the engine equals
`model.generate` token for token, tests/test_engine.py), the same number of new tokens per prompt.

The model is the throughput benchmark's GPT-2 architecture (4 layers x 256, built from config, ~4M parameters with a
BPE of 8k tokens trained on the bundled Rust); the prompts are the first tasks of rust_eval. EOS is taken out of the
model's generation config on both sides, so every completion runs to max_new_tokens. Generated tokens per second,
best of the rounds (the box's other load only slows a run), at 1, 4, 16 and 64 prompts, torch at 2 threads.

    python scripts/bench/engine.py           # writes results/benchmarks/engine.json and engine.png
    python scripts/bench/engine.py --quick   # 1 round, 16 new tokens: results/smoke/
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import machine, publish  # noqa: E402

OUT = os.path.join(ROOT, "results", "benchmarks", "engine.json")
SHAPE = {"n_layer": 4, "n_embd": 256, "n_head": 4}


def build(vocab: int = 8192):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rtune.data.benchmarks import load_benchmark
    from rtune.model import train_bpe_tokenizer

    tasks = load_benchmark("rust_eval").tasks
    texts = [t["prompt"] + t["canonical_solution"] for t in tasks]
    tokenizer = train_bpe_tokenizer(texts * 3, vocab, os.path.join(tempfile.mkdtemp(prefix="rtune-engine-"), "bpe"))
    torch.manual_seed(0)
    config = AutoConfig.for_model("gpt2", vocab_size=len(tokenizer), n_positions=1024, **SHAPE,
                                  bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.eos_token_id = None  # every completion runs to max_new_tokens, on both sides
    return model, tokenizer, [t["prompt"] for t in tasks]


def loop_generate(model, tokenizer, prompt_ids, new_tokens: int) -> int:
    """What a user writes without an engine: one prompt at a time."""
    import torch

    generated = 0
    with torch.no_grad():
        for ids in prompt_ids:
            out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.eos_token_id)
            generated += out.shape[1] - len(ids)
    return generated


def engine_generate(model, tokenizer, prompt_ids, new_tokens: int) -> int:
    from rtune.engine import Sampling, TransformersEngine

    engine = TransformersEngine(model, tokenizer, max_batch_size=len(prompt_ids))
    engine.stop_ids = []  # as the loop: no EOS stop (the tokenizer's EOS included)
    out = engine.generate(prompt_ids, Sampling(max_new_tokens=new_tokens))
    return sum(len(c[0].token_ids) for c in out)


def timed(fn, *args) -> dict:
    start = time.perf_counter()
    tokens = fn(*args)
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round, 16 new tokens: a smoke run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    rounds, new_tokens = (1, 16) if args.quick else (args.rounds, args.new_tokens)
    model, tokenizer, prompts = build()
    ids_all = [tokenizer(p)["input_ids"] for p in prompts]
    rows = []
    for n in (1, 4, 16, 64):
        ids = ids_all[:n]
        runs = {"loop": [], "engine": []}
        for r in range(rounds):  # interleaved, the order swapped each round
            for name in (("loop", "engine") if r % 2 == 0 else ("engine", "loop")):
                fn = loop_generate if name == "loop" else engine_generate
                runs[name].append(timed(fn, model, tokenizer, ids, new_tokens))
        best = {name: max(r["tokens_per_s"] for r in runs[name]) for name in runs}
        rows.append({"prompts": n, "prompt_tokens_mean": round(sum(map(len, ids)) / n, 1), "runs": runs,
                     "loop_tokens_per_s": best["loop"], "engine_tokens_per_s": best["engine"],
                     "speedup": round(best["engine"] / best["loop"], 2)})
        print(f"{n} prompts: loop {best['loop']:,.0f} tok/s, engine {best['engine']:,.0f} tok/s, "
              f"{rows[-1]['speedup']}x", flush=True)
    report = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "machine": machine(),
              "date": time.strftime("%Y-%m-%d"),
              "model": "GPT-2 architecture " + ", ".join(f"{k}={v}" for k, v in SHAPE.items()),
              "new_tokens": new_tokens, "rounds": rounds, "torch_threads": 2, "rows": rows}
    path = publish(report, args.out, smoke=args.quick)
    plot(rows, os.path.splitext(path)[0] + ".png")


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    xs = [r["prompts"] for r in rows]
    ax.plot(xs, [r["loop_tokens_per_s"] for r in rows], "o-", label="loop of model.generate, one prompt at a time")
    ax.plot(xs, [r["engine_tokens_per_s"] for r in rows], "s-", label="rtune engine, one batched call")
    for r in rows:
        ax.annotate(f"{r['speedup']}x", (r["prompts"], r["engine_tokens_per_s"]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompts")
    ax.set_ylabel("generated tokens / s")
    ax.set_title("greedy generation, 2 CPU threads (tiny GPT-2)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
