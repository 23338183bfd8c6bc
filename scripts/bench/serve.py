"""Serving, side by side in one run: `rtune serve` (Ray Serve, the shared engine; continuous batching on and off)
against what a user would otherwise write, a FastAPI + transformers server answering one request at a time with
model.generate.

What is measured, at 1, 4 and 16 concurrent clients (threads sending /v1/completions back to back): requests per
second, generated tokens per second, and p50 / p99 latency. Every request asks for 32 new tokens at temperature 0.8
(the model is built from config with random weights, so completions run to their length and every system generates
the same number of tokens). Both servers run on this machine with all its cores (torch threads = cores); the clients
share the machine.

    python scripts/bench/serve.py            # results/benchmarks/serve.json + serve.png
    python scripts/bench/serve.py --quick    # fewer requests: results/smoke/
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import BENCHMARKS, destination, machine, publish  # noqa: E402

NEW_TOKENS, TEMPERATURE, CONCURRENCY = 32, 0.8, (1, 4, 16)
PROMPTS = ["fn main() {", "pub fn add(a: i32, b: i32) -> i32 {", "let mut v = Vec::new();", "impl Display for"]

NAIVE_SERVER = '''
import os, threading, torch
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(int(os.environ["RTUNE_NAIVE_THREADS"]))
path = os.environ["RTUNE_NAIVE_MODEL"]
tokenizer = AutoTokenizer.from_pretrained(path); model = AutoModelForCausalLM.from_pretrained(path).eval()
app, lock = FastAPI(), threading.Lock()

@app.post("/v1/completions")
def complete(body: dict):
    with lock, torch.no_grad():  # one request at a time, as a plain script would
        ids = tokenizer(body["prompt"], return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=body["max_tokens"], do_sample=True,
                             temperature=body["temperature"], pad_token_id=tokenizer.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        return {"choices": [{"text": tokenizer.decode(new, skip_special_tokens=True)}],
                "usage": {"completion_tokens": int(new.numel())}}
'''


def build_model(out: str) -> str:
    """The throughput benchmark's GPT-2 shape (4 x 256), random weights, a BPE trained on the bundled Rust."""
    import datasets
    from transformers import AutoConfig, AutoModelForCausalLM

    from rtune.model import train_bpe_tokenizer

    texts = datasets.load_dataset(os.path.join(ROOT, "rtune", "sample_data", "rust_sample"), data_dir="data/rust",
                                  split="train")["content"]
    tokenizer = train_bpe_tokenizer(iter(texts), 8192, os.path.join(out, "tokenizer"))
    config = AutoConfig.for_model("gpt2", n_layer=4, n_embd=256, n_head=4, n_positions=512,
                                  vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                                  bos_token_id=tokenizer.eos_token_id)
    model = AutoModelForCausalLM.from_config(config)
    path = os.path.join(out, "model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load(url: str, model: str, concurrency: int, requests_total: int) -> dict:
    import requests

    def one(i: int):
        started = time.perf_counter()
        reply = requests.post(f"{url}/completions", json={"model": model, "prompt": PROMPTS[i % len(PROMPTS)],
                                                          "max_tokens": NEW_TOKENS, "temperature": TEMPERATURE,
                                                          "seed": i}, timeout=300)
        reply.raise_for_status()
        return time.perf_counter() - started, reply.json()["usage"]["completion_tokens"]

    for i in range(concurrency):  # warm-up: one request per client
        one(i)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(one, range(requests_total)))
    wall = time.perf_counter() - started
    latencies = sorted(d[0] for d in done)
    return {"concurrency": concurrency, "requests": requests_total, "requests_per_s": round(requests_total / wall, 2),
            "generated_tokens_per_s": round(sum(d[1] for d in done) / wall, 1),
            "p50_latency_s": round(statistics.median(latencies), 3),
            "p99_latency_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3)}


def wait_for(url: str, seconds: float = 120) -> None:
    import requests

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def run_naive(model: str, totals: dict, port: int) -> list:
    script = os.path.join(tempfile.mkdtemp(), "naive_server.py")
    with open(script, "w") as f:
        f.write(NAIVE_SERVER)
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "naive_server:app", "--host", "127.0.0.1", "--port",
                               str(port), "--app-dir", os.path.dirname(script), "--log-level", "warning"],
                              env={**os.environ, "PYTHONPATH": os.path.dirname(script), "RTUNE_NAIVE_MODEL": model,
                                   "RTUNE_NAIVE_THREADS": str(os.cpu_count() or 2)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/docs")
        return [load(f"http://127.0.0.1:{port}/v1", "naive", c, totals[c]) for c in CONCURRENCY]
    finally:
        server.terminate()
        server.wait(30)


def run_rtune(model: str, totals: dict, port: int, batch: int) -> list:
    from rtune.compose import compose_config
    from rtune.driver.serve import start, stop

    cores = os.cpu_count() or 2
    cfg = compose_config([f"serve.port={port}", f"serve.max_batch_size={batch}", f"serve.cpus_per_replica={cores}",
                          f"serve.max_tokens={NEW_TOKENS}"])
    url = start(cfg, model, "bench", {})
    try:
        wait_for(url.removesuffix("/v1") + "/health")
        return [load(url, "bench", c, totals[c]) for c in CONCURRENCY]
    finally:
        stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, not a measurement")
    parser.add_argument("--out", default=os.path.join(BENCHMARKS, "serve.json"))
    args = parser.parse_args()
    totals = {c: (8 if args.quick else 24) * max(1, c // 2) for c in CONCURRENCY}
    work = tempfile.mkdtemp(prefix="rtune-bench-serve-")
    model = build_model(work)
    import ray

    from rtune.driver.cluster import init_local_ray

    systems = {"FastAPI + transformers, one request at a time": run_naive(model, totals, 18601)}
    init_local_ray(num_cpus=os.cpu_count() or 2)
    systems["rtune serve, batching off (max_batch_size=1)"] = run_rtune(model, totals, 18602, 1)
    systems["rtune serve, continuous batching (max_batch_size=16)"] = run_rtune(model, totals, 18602, 16)
    ray.shutdown()
    naive16 = systems["FastAPI + transformers, one request at a time"][-1]["generated_tokens_per_s"]
    report = {"benchmark": "serve", "machine": machine(), "new_tokens": NEW_TOKENS, "temperature": TEMPERATURE,
              "model": "GPT-2 4 x 256 built from config (random weights), BPE 8k", "systems": systems,
              "speedup_at_16_vs_naive": {name: round(rows[-1]["generated_tokens_per_s"] / naive16, 2)
                                         for name, rows in systems.items()}}
    path = publish(report, args.out, args.quick)
    plot(report, os.path.splitext(destination(path, args.quick))[0] + ".png")


def plot(report: dict, out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for name, rows in report["systems"].items():
        xs = [r["concurrency"] for r in rows]
        left.plot(xs, [r["generated_tokens_per_s"] for r in rows], "o-", label=name)
        right.plot(xs, [r["p50_latency_s"] for r in rows], "o-", label=f"{name} p50")
        right.plot(xs, [r["p99_latency_s"] for r in rows], "x:", label=f"{name} p99")
    for ax, label in ((left, "generated tokens / s"), (right, "latency (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=6)
    fig.suptitle(f"Serving {NEW_TOKENS} new tokens per request, {report['machine']['cores']}-core CPU", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


if __name__ == "__main__":
    main()
