"""Throughput and start-up, side by side in one invocation: writes results/benchmarks/throughput.json and .png.

    python scripts/bench/throughput.py               # 3 interleaved rounds, ~26 min on a 2-core CPU
    python scripts/bench/throughput.py --rounds 1    # one draw of each, ~9 min
    python scripts/bench/throughput.py --quick       # a smoke test (CI): tiny model, few steps, no timing claims;
                                                     # writes results/smoke/throughput.json and .png

The systems train the same model (GPT-2 architecture, 4 x 256, built from config with the same seed)
on the same packed blocks of the bundled Rust corpus, with the same micro batch, sequence length,
AdamW and step count. First one CPU thread per process (a like-for-like comparison of the loops):

  bare      a plain PyTorch loop, one process
  hf        transformers.Trainer, one process
  rtune1    python -m rtune train num_workers=1 cpus_per_worker=1
  torchrun  the bare loop under DDP, `torchrun --nproc_per_node 2` (gloo)
  rtune2    python -m rtune train num_workers=2 cpus_per_worker=1

then each at its defaults (what a user gets without tuning anything):

  bare_default    the plain loop at torch's default threads (all cores)
  rtune1_default  python -m rtune train num_workers=1 (cpus_per_worker=auto: all cores)

and once more rtune2 joining a local cluster that `python -m rtune up` keeps (rtune2_kept: Ray's own
start-up already paid, as for repeated runs on one machine; the cluster is started before and stopped after).

Rounds: every system runs once per round, forward in odd rounds and backward in even ones, so a drift of
the machine's speed during the run (up to ~15% within minutes on a shared 2-core box) hits every system
alike. Each system's figures are the median over its rounds; each ratio is the median of the ratios
taken within a round (the two systems ran minutes apart, not the whole run apart).

Measured for each: steady-state tokens/s (non-padding tokens; the first WARMUP steps left out), time
to first step (from launching the process to the end of optimizer step 1), wall time, peak RSS per
process. Also: packing efficiency (non-padding share of the training blocks) of rtune's packing vs
padding every document to seq_len.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import machine, median_of, write_json  # noqa: E402

SHAPE = {"n_layer": 4, "n_embd": 256, "n_head": 4}
SEQ_LEN, MICRO_BATCH, SEED = 256, 8, 1234


def rtune_overrides(quick: bool) -> list[str]:
    shape = {"n_layer": 2, "n_embd": 64, "n_head": 2} if quick else SHAPE
    return [f"model.from_config.{k}={v}" for k, v in shape.items()] + [f"data.seq_len={SEQ_LEN}"]


def prepare(quick: bool):
    from rtune.compose import compose_config
    from rtune.data.pipeline import prepare_data
    from rtune.driver.preflight import finalize

    cfg = finalize(compose_config(rtune_overrides(quick)))
    prepared, tokenizer = prepare_data(cfg)
    return cfg, prepared, tokenizer


def build_model(cfg, tokenizer):
    import torch

    from rtune.model import build_model as rtune_build

    torch.manual_seed(SEED)
    return rtune_build(cfg.model, len(tokenizer), tokenizer.eos_token_id)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the systems that run inside a child process ----------------------------------------------------

def run_bare(args, distributed: bool) -> dict:
    """A plain loop: DataLoader + AdamW + clip; under torchrun, DDP + DistributedSampler (gloo)."""
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    from rtune.data.rows import PackedRows
    from rtune.worker.optim import build_optimizer

    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world = 0, 1
    if distributed:
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    cfg, prepared, tokenizer = prepare(args.quick)
    data = PackedRows(prepared.train_path, tokenizer.pad_token_id)
    model = build_model(cfg, tokenizer)
    sampler = (DistributedSampler(data, world, rank, shuffle=True, seed=SEED, drop_last=True) if distributed
               else RandomSampler(data, generator=torch.Generator().manual_seed(SEED)))
    loader = DataLoader(data, batch_size=MICRO_BATCH, sampler=sampler, drop_last=True)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = build_optimizer(model, cfg.optim)
    times, tokens, step, epoch = [], [], 0, 0
    model.train()
    while step < args.steps:
        if distributed:
            sampler.set_epoch(epoch)
        for batch in loader:
            loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            times.append(time.time())
            tokens.append(int((batch["labels"] != -100).sum()) * world)
            if step == args.steps:
                break
        epoch += 1
    rss = peak_rss_mb()
    if distributed:
        gathered = [None] * world
        dist.all_gather_object(gathered, rss)
        dist.destroy_process_group()
        rss = gathered
    return {"step_end_times": times, "tokens_per_step": tokens, "peak_rss_mb": rss if distributed else [rss],
            "rank": rank}


def run_hf(args) -> dict:
    """transformers.Trainer on the same model, blocks and optimizer settings."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from rtune.data.rows import PackedRows

    torch.set_num_threads(1)
    cfg, prepared, tokenizer = prepare(args.quick)
    data = PackedRows(prepared.train_path, tokenizer.pad_token_id)
    model = build_model(cfg, tokenizer)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            times.append(time.time())

    out = tempfile.mkdtemp(prefix="rtune-bench-hf-")
    targs = TrainingArguments(output_dir=out, per_device_train_batch_size=MICRO_BATCH, max_steps=args.steps,
                              learning_rate=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                              adam_beta1=cfg.optim.beta1, adam_beta2=cfg.optim.beta2, max_grad_norm=1.0,
                              lr_scheduler_type="constant", logging_strategy="no", save_strategy="no",
                              report_to=[], use_cpu=True, dataloader_num_workers=0, seed=SEED, disable_tqdm=True)
    Trainer(model=model, args=targs, train_dataset=data, callbacks=[Clock()]).train()
    per_step = MICRO_BATCH * SEQ_LEN  # the packed blocks are full but for the very last one
    return {"step_end_times": times, "tokens_per_step": [per_step] * len(times), "peak_rss_mb": [peak_rss_mb()]}


# ---- the parent: launch each system, time it from the outside ---------------------------------------

def steady(times: list[float], tokens: list[int], warmup: int) -> float:
    return sum(tokens[warmup + 1:]) / (times[-1] - times[warmup])


def launch_child(mode: str, args, nproc: int = 1, threads: int = 1) -> dict:
    """threads: torch threads per process (0: torch's default, all cores)."""
    result = tempfile.mktemp(suffix=".json")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--steps", str(args.steps), "--result", result,
           "--threads", str(threads)]
    if args.quick:
        cmd.append("--quick")
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *cmd[1:]]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    with open(result) as f:
        out = json.load(f)
    return summarize(out["step_end_times"], out["tokens_per_step"], out["peak_rss_mb"], t0, wall, args.warmup)


def launch_rtune(workers: int, args, cpus: str = "1") -> dict:
    """cpus: cpus_per_worker ("auto" is rtune's default)."""
    storage = tempfile.mkdtemp(prefix="rtune-bench-")
    cmd = [sys.executable, "-m", "rtune", "train", *rtune_overrides(args.quick), f"num_workers={workers}",
           f"cpus_per_worker={cpus}",
           f"storage_path={storage}", "run_name=bench", f"trainer.max_steps={args.steps}",
           f"trainer.micro_batch_size={MICRO_BATCH}", "trainer.log_every_steps=1", "trainer.eval_max_batches=1",
           f"trainer.eval_every_steps={args.steps}", f"trainer.checkpoint_every_steps={args.steps}",
           "optim.schedule=constant", "optim.warmup_steps=0"]
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - t0
    records = [json.loads(line) for line in open(os.path.join(storage, "bench", "metrics.jsonl"))]
    steps = [r for r in records if "loss" in r]
    with open(os.path.join(storage, "bench", "summary.json")) as f:
        summary = json.load(f)
    tokens = [workers * MICRO_BATCH * SEQ_LEN] * len(steps)
    out = summarize([r["time"] for r in steps], tokens, summary["peak_rss_mb_per_worker"], t0, wall, args.warmup)
    out["mfu_logged"] = steps[-1].get("mfu")
    return out


def launch_rtune_kept(workers: int, args) -> dict:
    """rtune joining a local cluster `python -m rtune up` keeps (what repeated runs on one machine get)."""
    subprocess.run([sys.executable, "-m", "rtune", "up"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        return launch_rtune(workers, args)
    finally:
        subprocess.run([sys.executable, "-m", "rtune", "down"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def summarize(times, tokens, rss, t0, wall, warmup) -> dict:
    return {"steady_tokens_per_s": round(steady(times, tokens, warmup), 1),
            "time_to_first_step_s": round(times[0] - t0, 2), "wall_s": round(wall, 2),
            "peak_rss_mb_per_process": [round(r) for r in rss], "steps": len(times)}


def packing_efficiency(quick: bool) -> dict:
    import numpy as np

    from rtune.data.packing import PAD
    from rtune.data.sources import load_records

    cfg, prepared, tokenizer = prepare(quick)
    blocks = np.load(os.path.join(prepared.train_path, "input_ids.npy"), mmap_mode="r")
    packed = float((blocks != PAD).mean())
    docs = load_records(cfg.data)
    lengths = [len(e.ids) + 1 for e in tokenizer.backend_tokenizer.encode_batch(docs[cfg.data.text_field],
                                                                              add_special_tokens=False)]
    padded = sum(min(n, SEQ_LEN) for n in lengths) / (len(lengths) * SEQ_LEN)
    return {"rtune_packed_non_pad_fraction": round(packed, 4), "pad_to_max_non_pad_fraction": round(padded, 4),
            "pad_to_max_truncated_token_fraction": round(1 - sum(min(n, SEQ_LEN) for n in lengths) / sum(lengths), 4)}


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    a.bar(names, [results[n]["steady_tokens_per_s"] for n in names], color="#4c72b0")
    a.set_title("steady-state tokens/s (higher is better)", fontsize=10)
    b.bar(names, [results[n]["time_to_first_step_s"] for n in names], color="#dd8452")
    b.set_title("time to first step, s (lower is better)", fontsize=10)
    for ax in (a, b):
        ax.tick_params(axis="x", labelsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke test; figures are not comparable")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick)")
    parser.add_argument("--child", choices=["bare", "ddp", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "benchmarks", "throughput.json"))
    args = parser.parse_args()
    args.steps = args.steps or (6 if args.quick else 40)
    args.warmup = 2 if args.quick else 5
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.child:
        out = run_hf(args) if args.child == "hf" else run_bare(args, distributed=args.child == "ddp")
        if out.get("rank", 0) == 0:
            with open(args.result, "w") as f:
                json.dump(out, f)
        return

    prepare(args.quick)  # warm the data cache once, outside every timing
    systems = {"bare": lambda: launch_child("bare", args), "hf": lambda: launch_child("hf", args),
               "rtune1": lambda: launch_rtune(1, args), "torchrun": lambda: launch_child("ddp", args, 2),
               "rtune2": lambda: launch_rtune(2, args),
               "bare_default": lambda: launch_child("bare", args, threads=0),
               "rtune1_default": lambda: launch_rtune(1, args, cpus="auto"),
               "rtune2_kept": lambda: launch_rtune_kept(2, args)}
    if args.quick:  # the smoke test walks every code path once: both launchers, both thread settings
        systems = {k: systems[k] for k in ("bare_default", "hf", "torchrun", "rtune1_default")}
    rounds: list[dict] = []
    for r in range(args.rounds):
        order = list(systems) if r % 2 == 0 else list(reversed(systems))
        rounds.append({})
        for name in order:
            rounds[-1][name] = systems[name]()
            print(f"round {r + 1}/{args.rounds}", name, json.dumps(rounds[-1][name]), flush=True)
    results = {name: median_of([rnd[name] for rnd in rounds]) for name in systems}
    pairs = {"rtune_vs_bare": ("rtune1", "bare", "steady_tokens_per_s"),
             "rtune2_vs_torchrun": ("rtune2", "torchrun", "steady_tokens_per_s"),
             "rtune_vs_hf_trainer": ("rtune1", "hf", "steady_tokens_per_s"),
             "ttfs_vs_torchrun": ("rtune2", "torchrun", "time_to_first_step_s"),
             "ttfs_kept_cluster_vs_torchrun": ("rtune2_kept", "torchrun", "time_to_first_step_s"),
             "defaults_rtune1_vs_bare": ("rtune1_default", "bare_default", "steady_tokens_per_s")}
    per_round = {key: [round(rnd[a][m] / rnd[b][m], 3) for rnd in rounds] for key, (a, b, m) in pairs.items()
                 if a in systems and b in systems}

    report = {
        "what": "same model/data/batch/steps through each system: one CPU thread per process, then each at its "
                "defaults; figures are medians over interleaved rounds, ratios the median of within-round ratios"
                + (" (QUICK smoke run: not a measurement)" if args.quick else ""),
        "model": "tiny" if args.quick else "GPT-2 architecture " + ", ".join(f"{k}={v}" for k, v in SHAPE.items()),
        "seq_len": SEQ_LEN, "micro_batch_size": MICRO_BATCH, "steps": args.steps, "warmup_steps_excluded": args.warmup,
        "rounds": args.rounds, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "systems": results,
        "ratios": {key: round(statistics.median(values), 3) for key, values in per_round.items()},
        "ratios_per_round": per_round,
        "packing": packing_efficiency(args.quick),
    }
    out = write_json(report, args.out, smoke=args.quick)
    plot(results, os.path.splitext(out)[0] + ".png")
    print(json.dumps(report["ratios"]), json.dumps(report["packing"]))


if __name__ == "__main__":
    main()
