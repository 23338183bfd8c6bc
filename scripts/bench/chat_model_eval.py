"""pass@1 and pass@10 on rust_eval of the bundled chat model, before and after `python -m rtune train data=rust_chat`.

The run trains the default tiny GPT-2 (~1.2M parameters, built from config) on rust_chat for 200 steps with
evaluation during training every 100 steps (step 0 is the model before training): chat prompts, 10 samples per task
at temperature 0.8, all 155 tasks. Then `rtune eval` scores the final checkpoint the same way, and its per-sample
statuses say what went wrong. Both commands are printed; `--run-dir` / `--eval-dir` collect the figures from runs
made before with exactly those commands instead of running them again.

    python scripts/bench/chat_model_eval.py     # ~15 min here; writes results/benchmarks/chat_model_eval.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import machine, publish  # noqa: E402

OUT = os.path.join(ROOT, "results", "benchmarks", "chat_model_eval.json")
EVAL = ["prompt_style=chat", "samples=10", "k=[1,10]", "temperature=0.8"]


def commands(storage: str):
    train = [sys.executable, "-m", "rtune", "train", "data=rust_chat", "run_name=rust-chat-eval",
             f"storage_path={storage}", "trainer.eval_generate_every_steps=100", "trainer.keep_checkpoints=3",
             *[f"eval.{kv}" for kv in EVAL]]
    evaluate = [sys.executable, "-m", "rtune", "eval", f"{storage}/rust-chat-eval/checkpoint_00000200", *EVAL,
                f"storage_path={storage}", "run_name=eval-chat-200"]
    return train, evaluate


def collect(run_dir: str, eval_dir: str) -> dict:
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    during = [{k: r[k] for k in ("step", "eval_loss", "eval_pass@1", "eval_pass@10") if k in r}
              for r in records if "eval_pass@1" in r]
    summary = json.load(open(os.path.join(eval_dir, "eval_summary.json")))
    firsts = collections.Counter()
    for line in open(os.path.join(eval_dir, "eval_results.jsonl")):
        for sample in json.loads(line)["samples"]:
            detail = (sample.get("detail") or "").splitlines()
            firsts[detail[0][:60] if detail else sample["status"]] += 1
    return {"during_training": during,
            "rtune_eval_final": {k: summary[k] for k in ("pass@1", "pass@10", "tasks", "samples", "statuses",
                                                         "benchmark_sha256", "seconds", "check_seconds")},
            "most_common_first_lines": firsts.most_common(6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", help="the training run made before with the printed command")
    parser.add_argument("--eval-dir", help="the rtune eval run made before with the printed command")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    storage = os.path.dirname(args.run_dir) if args.run_dir else tempfile.mkdtemp(prefix="rtune-chat-eval-")
    train, evaluate = commands(storage)
    timings = {}
    if not args.run_dir:
        for name, command in (("train", train), ("eval", evaluate)):
            start = time.perf_counter()
            subprocess.run(command, check=True, cwd=ROOT)
            timings[f"{name}_wall_s"] = round(time.perf_counter() - start, 1)
    run_dir = args.run_dir or os.path.join(storage, "rust-chat-eval")
    eval_dir = args.eval_dir or os.path.join(storage, "eval-chat-200")
    report = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "machine": machine(),
              "date": time.strftime("%Y-%m-%d"), "commands": [" ".join(c[1:]) for c in (train, evaluate)],
              **timings, **collect(run_dir, eval_dir)}
    publish(report, args.out, smoke=False)


if __name__ == "__main__":
    main()
