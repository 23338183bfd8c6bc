"""GRPO side by side, in one run on one machine: rtune (rollout.engine=policy, 2 workers), rtune (engine=actors, 1
learner + 1 rollout actor, staleness 1) and TRL's GRPOTrainer (one process, 2 threads, generation with
model.generate, no vLLM): the same tiny model, the same prompts, group size, batch, steps and optimizer.

What is measured, for each system:
- seconds per optimizer step: the median over steady steps (the first 3 and every evaluation step left out);
  a step is generation + scoring + one gradient update of `prompts x group` completions;
- the training reward of every step (the mean over its completions) and the held-out reward: greedy decoding over
  the same held-out prompts (rtune's validation split), exact match, every `--eval-every` steps.

The model is the offline recipe's SFT warm start (`+experiment=arith_sft`, trained here first unless --model is
given): a 2 x 128 GPT-2 that adds two-digit numbers about a third of the time. The task, `+experiment=arith_grpo`:
32 prompts x 8 completions per step, exact-match reward, lr 2e-4 (20 warmup steps, then constant), AdamW
(0.9, 0.95), no weight decay, clip 0.2 / 0.28, beta 0, `dapo` aggregation, temperature 1.

TRL is not a dependency of rtune: `pip install --no-deps trl==1.16.0` adds it without touching torch or transformers
(what this measurement ran).

    python scripts/bench/grpo.py                 # ~8 min on 2 cores: results/benchmarks/grpo.json + grpo.png
    python scripts/bench/grpo.py --quick         # 20 steps: results/smoke/
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import BENCHMARKS, destination, machine, publish  # noqa: E402

PROMPTS_PER_STEP, GROUP, MAX_NEW, LR, WARMUP, TEMPERATURE = 32, 8, 6, 2e-4, 20, 1.0


def steady_seconds(times: dict, eval_every: int) -> float:
    """Median seconds per step over steps that neither follow an evaluation nor belong to the first three."""
    steps = sorted(times)
    gaps = [(times[b] - times[a]) / (b - a) for a, b in zip(steps, steps[1:])
            if b > 3 and a % eval_every != 0 and b % eval_every != 0]
    return statistics.median(gaps)


def run_rtune(name: str, model: str, steps: int, eval_every: int, storage: str, *extra: str) -> dict:
    from rtune.compose import compose_config
    from rtune.driver.launch import train

    cfg = compose_config(["+experiment=arith_grpo", f"model.name_or_path={model}", f"run_name={name}",
                          f"storage_path={storage}", f"trainer.max_steps={steps}", "trainer.log_every_steps=1",
                          f"trainer.eval_every_steps={eval_every}", f"trainer.checkpoint_every_steps={steps}",
                          "rollout.eval_samples=0", f"optim.lr={LR}", f"optim.warmup_steps={WARMUP}", *extra])
    started = time.perf_counter()
    summary = train(cfg, keep_ray=True)
    wall = time.perf_counter() - started
    with open(os.path.join(summary["run_dir"], "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    trained = [r for r in records if "reward" in r]
    return {"seconds_per_step": round(steady_seconds({r["step"]: r["time"] for r in trained}, eval_every), 4),
            "train_reward": [round(r["reward"], 4) for r in trained],
            "eval_reward": {r["step"]: round(r["eval_reward"], 4) for r in records if "eval_reward" in r},
            "wall_s_with_startup": round(wall, 1),
            "generate_s": round(statistics.median(r["generate_s"] for r in trained), 4),
            "train_s": round(statistics.median(r["train_s"] for r in trained if "train_s" in r), 4)}


def warm_start(storage: str) -> str:
    from rtune.compose import compose_config
    from rtune.driver.launch import train

    summary = train(compose_config(["+experiment=arith_sft", "run_name=arith-sft", f"storage_path={storage}"]),
                    keep_ray=True)
    return summary["latest_checkpoint"]


def splits(model: str, storage: str):
    """rtune's train / held-out split of the prompts, given to TRL as they are."""
    from rtune.compose import compose_config
    from rtune.data.pipeline import prepare_data
    from rtune.data.prompt_sets import read_prompt_records

    prepared, _ = prepare_data(compose_config(["+experiment=arith_grpo", f"model.name_or_path={model}",
                                               f"storage_path={storage}"]))
    return read_prompt_records(prepared.train_path), read_prompt_records(prepared.val_path)


def smoothed(values, window: int = 10):
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
            for i in range(len(values))]


def plot(report: dict, out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=110, gridspec_kw={"width_ratios": [2, 1]})
    for (name, result), color in zip(report["systems"].items(), ("tab:blue", "tab:orange", "tab:green")):
        curve = smoothed(result["train_reward"])
        left.plot(range(1, len(curve) + 1), curve, color=color, lw=1.2, label=f"{name}: reward (10-step mean)")
        points = sorted((int(k), v) for k, v in result["eval_reward"].items())
        left.plot(*zip(*points), "o--", color=color, lw=1, label=f"{name}: held-out (greedy)")
    left.set_xlabel("optimizer step")
    left.set_ylabel("exact-match reward")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    names = list(report["systems"])
    per_min = [60 / report["systems"][n]["seconds_per_step"] for n in names]
    right.bar(range(len(names)), per_min, color=["tab:blue", "tab:orange", "tab:green"][:len(names)])
    right.set_xticks(range(len(names)), [n.split(" (")[0] for n in names], fontsize=8)
    right.set_ylabel("optimizer steps per minute")
    for i, v in enumerate(per_min):
        right.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    fig.suptitle(f"GRPO, {PROMPTS_PER_STEP} prompts x {GROUP} completions per step, "
                 f"{report['machine']['cores']}-core CPU", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--model", default=None, help="an SFT warm start (default: train the recipe's here)")
    parser.add_argument("--quick", action="store_true", help="20 steps, not a measurement")
    parser.add_argument("--out", default=os.path.join(BENCHMARKS, "grpo.json"))
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_every = 20, 10
    storage = tempfile.mkdtemp(prefix="rtune-bench-grpo-")
    import ray

    from scripts.bench.trl_grpo import run_trl

    model = args.model or warm_start(storage)
    train_records, val_records = splits(model, storage)
    systems = {
        "rtune policy (2 workers)": run_rtune("policy", model, args.steps, args.eval_every, storage),
        "rtune actors (1 learner + 1 actor, staleness 1)": run_rtune(
            "actors", model, args.steps, args.eval_every, storage, "num_workers=1", "cpus_per_worker=1",
            "trainer.micro_batch_size=32", "rollout.engine=actors", "rollout.cpus_per_actor=1",
            "rollout.max_staleness=1"),
    }
    ray.shutdown()  # TRL gets the machine to itself
    started = time.perf_counter()
    trl = run_trl(model, train_records, val_records, steps=args.steps, num_generations=GROUP,
                  prompts_per_step=PROMPTS_PER_STEP, max_new_tokens=MAX_NEW, temperature=TEMPERATURE, lr=LR, seed=0,
                  eval_every_steps=args.eval_every, threads=os.cpu_count() or 2, warmup_steps=WARMUP,
                  adam_betas=(0.9, 0.95), output_dir=os.path.join(storage, "trl"))
    rewards = trl["train_reward"]
    times = trl["seconds_per_step"]
    steady = [t for i, t in enumerate(times, 1) if i > 3 and i % args.eval_every != 0 and (i - 1) % args.eval_every]
    systems[f"TRL {trl['trl_version']} (1 process, {os.cpu_count()} threads)"] = {
        "seconds_per_step": round(statistics.median(steady), 4), "train_reward": [round(r, 4) for r in rewards],
        "eval_reward": {int(k): round(v, 4) for k, v in trl["eval_reward"].items()},
        "wall_s_with_startup": round(time.perf_counter() - started, 1)}
    trl_name = list(systems)[-1]
    for result in systems.values():
        result["steps_per_minute"] = round(60 / result["seconds_per_step"], 1)
        result["speedup_vs_trl"] = round(systems[trl_name]["seconds_per_step"] / result["seconds_per_step"], 2)
        tail = result["train_reward"][-50:]
        result["train_reward_last_50_steps"] = round(sum(tail) / len(tail), 4)
    report = {"benchmark": "grpo", "machine": machine(), "steps": args.steps, "prompts_per_step": PROMPTS_PER_STEP,
              "group": GROUP, "max_new_tokens": MAX_NEW, "lr": LR, "warmup_steps": WARMUP,
              "held_out_prompts": len(val_records), "model": "arith_sft warm start (GPT-2 2 x 128, 0.44M parameters)",
              "systems": systems}
    path = publish(report, args.out, args.quick)
    plot(report, os.path.splitext(destination(path, args.quick))[0] + ".png")


if __name__ == "__main__":
    main()
