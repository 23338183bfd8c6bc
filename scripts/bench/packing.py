"""Chat SFT packing: none vs isolated vs concat on two chat sets, same model, same steps, 2 workers.

    none      one conversation per row, padded to the longest in the micro-batch (what Ray's own
              fine-tuning examples and many scripts do)
    isolated  whole conversations packed into rows by best-fit-decreasing, each attending only to itself
    concat    conversations streamed into rows, attending across their boundaries

Data: the bundled `data=rust_chat`, and a chat set rtune did not write: conversations built here from
the Python standard library (for each public function or class of ~40 modules, "What does `json.dumps`
do?" answered with its docstring, some asking for the signature), written to a temporary JSONL.

Measured per run (tiny GPT-2 built from config, seq_len 512, micro batch 8, 2 workers x 1 CPU, fp32):
loss-bearing (assistant) tokens per second in steady state, the share of computed token slots that
are padding, and, after the same number of steps, the held-out assistant loss of the trained model
evaluated on every held-out conversation *alone* (isolated rows), so concat's cross-sample attention
gives it no advantage at evaluation.

    python scripts/bench/packing.py          # writes results/benchmarks/packing.json and packing.png
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import machine, write_json  # noqa: E402

OUT = os.path.join(ROOT, "results", "benchmarks", "packing.json")
MODULES = ["json", "os", "os.path", "re", "math", "random", "statistics", "itertools", "functools", "collections",
           "heapq", "bisect", "string", "textwrap", "shutil", "glob", "fnmatch", "csv", "datetime", "calendar",
           "time", "hashlib", "base64", "binascii", "zlib", "gzip", "tarfile", "zipfile", "pathlib", "tempfile",
           "subprocess", "threading", "queue", "socket", "urllib.parse", "html", "difflib", "decimal",
           "fractions", "operator", "copy", "pprint", "enum", "dataclasses", "typing", "inspect", "unicodedata"]
ASKS = ["What does `{name}` do in Python?", "Explain `{name}`.", "When would I use `{name}`?",
        "Can you describe what `{name}` is for?"]


def stdlib_conversations(seed: int = 0) -> list:
    """Conversations from the standard library's own docstrings: text rtune did not write."""
    rng = random.Random(seed)
    out = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            doc = inspect.getdoc(obj)
            home = getattr(obj, "__module__", None) or module_name
            if not doc or len(doc) < 40 or home.split(".")[0].lstrip("_") != module_name.split(".")[0]:
                continue  # documented here, not re-exported from elsewhere
            qualified = f"{module_name}.{name}"
            messages = [{"role": "user", "content": rng.choice(ASKS).format(name=qualified)},
                        {"role": "assistant", "content": doc[:1500]}]
            try:
                signature = str(inspect.signature(obj))
            except (TypeError, ValueError):
                signature = None
            if signature and rng.random() < 0.3:
                messages += [{"role": "user", "content": "What is its signature?"},
                             {"role": "assistant", "content": f"`{qualified}{signature}`"}]
            out.append({"messages": messages})
    rng.shuffle(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()

    import torch

    from rtune.compose import compose_config
    from rtune.data.pipeline import prepare_data
    from rtune.data.rows import PackedRows
    from rtune.driver.cluster import init_local_ray
    from rtune.driver.launch import train
    from rtune.driver.preflight import finalize
    from rtune.inference import load_model
    from rtune.metrics import read_metrics
    from rtune.worker.lm import TokenLogprobs
    from rtune.worker.loop import evaluate

    work = tempfile.mkdtemp(prefix="rtune-packing-")
    stdlib_path = os.path.join(work, "stdlib_chat.jsonl")
    conversations = stdlib_conversations()
    with open(stdlib_path, "w") as f:
        for c in conversations:
            f.write(json.dumps(c) + "\n")
    datasets = {"rust_chat (bundled)": ["data=rust_chat"],
                f"python stdlib docstrings ({len(conversations)} conversations)":
                    [f"data.path={stdlib_path}", "data.format=chat"]}
    init_local_ray(num_cpus=os.cpu_count() or 2)
    rows = []
    for data_name, data in datasets.items():
        common = [*data, "data.seq_len=512", "num_workers=2", "trainer.micro_batch_size=8",
                  f"trainer.max_steps={args.steps}", "trainer.log_every_steps=5",
                  f"trainer.eval_every_steps={args.steps}", f"trainer.checkpoint_every_steps={args.steps}",
                  "trainer.eval_max_batches=1", f"storage_path={work}", "data.truncation=truncate"]
        isolated_val = None
        for packing in ("none", "isolated", "concat"):
            cfg = compose_config([*common, f"data.packing={packing}", f"run_name={len(rows)}-{packing}"])
            summary = train(cfg)
            if isolated_val is None:
                iso_cfg = finalize(compose_config([*common, "data.packing=isolated"]))
                prepared, tokenizer = prepare_data(iso_cfg)
                isolated_val = PackedRows(prepared.val_path, tokenizer.pad_token_id)
            model, _, _ = load_model(summary["latest_checkpoint"])
            held_out = evaluate(TokenLogprobs(model), isolated_val, 8, None, 0, 1, torch.device("cpu"),
                                torch.autocast("cpu", enabled=False))["eval_loss"]
            records = [r for r in read_metrics(os.path.join(summary["run_dir"], "metrics.jsonl")) if "loss" in r]
            steady = [r for r in records if r["step"] > 10]
            padding = 1 - sum(r["tokens"] for r in steady) / sum(r["token_slots"] for r in steady)
            row = {"data": data_name, "packing": packing,
                   "target_tokens_per_s": round(summary["steady_target_tokens_per_s"], 1),
                   "tokens_per_s": round(summary["steady_tokens_per_s"], 1),
                   "padding_share_of_computed": round(padding, 4),
                   "held_out_assistant_loss_alone": round(held_out, 4), "steps": args.steps,
                   "wall_s": summary["wall_s"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    ratios = {}
    for data_name in datasets:
        by = {r["packing"]: r for r in rows if r["data"] == data_name}
        ratios[data_name] = {
            "isolated_over_none_target_tokens_per_s": round(by["isolated"]["target_tokens_per_s"]
                                                           / by["none"]["target_tokens_per_s"], 3),
            "isolated_over_concat_target_tokens_per_s": round(by["isolated"]["target_tokens_per_s"]
                                                             / by["concat"]["target_tokens_per_s"], 3)}
    result = {"what": "chat SFT packing, tiny GPT-2 (4 layers, 128 wide) built from config, seq_len 512, micro batch 8,"
                      f" 2 workers x 1 CPU, {args.steps} steps each; steady state leaves out the first 10 steps",
              "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "targets": "isolated >= 2x none and within 5% of concat (loss-bearing tokens/s)",
              "rows": rows, "ratios": ratios}
    out = write_json(result, args.out, smoke=False)
    plot(rows, list(datasets), os.path.splitext(out)[0] + ".png")
    print("| data | packing | loss-bearing tokens/s | padding share of computed tokens | held-out assistant loss |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['data']} | {r['packing']} | {r['target_tokens_per_s']:,.0f} | "
              f"{100 * r['padding_share_of_computed']:.1f}% | {r['held_out_assistant_loss_alone']:.3f} |")
    print(json.dumps(ratios, indent=2))


def plot(rows, data_names, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    packings = ["none", "isolated", "concat"]
    width = 0.38
    for k, data_name in enumerate(data_names):
        by = {r["packing"]: r for r in rows if r["data"] == data_name}
        xs = [i + (k - 0.5) * width for i in range(3)]
        axes[0].bar(xs, [by[p]["target_tokens_per_s"] for p in packings], width, label=data_name.split(" (")[0])
        axes[1].bar(xs, [100 * by[p]["padding_share_of_computed"] for p in packings], width,
                    label=data_name.split(" (")[0])
    for ax, label in zip(axes, ["loss-bearing tokens / s", "padding share of computed tokens (%)"]):
        ax.set_xticks(range(3), packings)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Chat SFT packing (2 CPU workers, same model and steps)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
