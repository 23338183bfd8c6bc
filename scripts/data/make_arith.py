"""Generate the bundled arithmetic task for online RL (`data=arith_sft`, `data=arith_prompts`).

A verifiable task small enough for a tiny model to learn on a CPU within minutes: add two whole numbers below 100.

    arith_sft/data.jsonl      {"prompt": "23+45=", "completion": "68"}     the SFT warm start (prompt_completion)
    arith_prompts/data.jsonl  {"prompt": "17+8=", "answer": "25"}          RL prompts, scored by exact_match

The two files share no sum (a pair a+b and b+a count as one), so RL's held-out reward measures what SFT did not see.

    python scripts/data/make_arith.py     # writes rtune/sample_data/arith_sft/ and rtune/sample_data/arith_prompts/
"""

from __future__ import annotations

import argparse
import json
import os
import random

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "rtune",
                    "sample_data")


def write(name: str, records) -> None:
    os.makedirs(os.path.join(ROOT, name), exist_ok=True)
    with open(os.path.join(ROOT, name, "data.jsonl"), "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--below", type=int, default=100, help="operands are whole numbers below this")
    parser.add_argument("--sft", type=int, default=3000, help="SFT examples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    pairs = sorted({tuple(sorted((a, b))) for a in range(args.below) for b in range(args.below)})
    rng.shuffle(pairs)
    sft, rl = pairs[:args.sft], pairs[args.sft:]

    def ordered(a: int, b: int):
        return (a, b) if rng.random() < 0.5 else (b, a)

    write("arith_sft", ({"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in (ordered(*p) for p in sft)))
    write("arith_prompts", ({"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in (ordered(*p) for p in rl)))
    print(f"{len(sft)} SFT examples, {len(rl)} RL prompts under {ROOT}")


if __name__ == "__main__":
    main()
