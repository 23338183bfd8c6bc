"""Data preparation at corpus scale: `data.engine=datasets` (the driver loads, tokenizes and packs in one
process) vs `data.engine=ray` (Ray Data tokenizer actors across the cluster; the driver plans and keeps counts).

For synthetic Rust corpora (JSON lines in 10 MB files, like a hub dataset's shards) of 50 MB, 200 MB and 1 GB:
the preparation's wall time and the driver's peak resident memory (VmHWM), each in a fresh process with empty
caches (rtune's and the datasets library's) and the same tokenizer (a BPE trained once on the bundled sample,
so the figures measure preparation, not tokenizer training). Then the ray engine's throughput on local
clusters of 1 node x 1 CPU and 2 nodes x 1 CPU (`ray start`, no dashboard) on the 1 GB corpus, the scaling a
bigger cluster gets, with the nodes sharing the box's cores and with each node pinned to a core of its own
(`--placement`, see `cluster`); and, for the ceiling of this box, two plain processes tokenizing vs one.

    python scripts/bench/data_engine.py            # writes results/benchmarks/data_engine.json
    python scripts/bench/data_engine.py --quick    # 6 MB / 12 MB smoke run; writes results/smoke/data_engine.json
    # one size, the engines interleaved (order swapped each round), no cluster scaling:
    python scripts/bench/data_engine.py --sizes 50 --rounds 5 --sizes-only \
        --out results/benchmarks/data_engine_50mb.json
    # the cluster scaling alone, 1 and 2 nodes interleaved (order swapped each round):
    python scripts/bench/data_engine.py --sizes 1024 --rounds 2 --scaling-only \
        --out results/benchmarks/data_engine_scaling.json

A partial run (--sizes, --sizes-only, --scaling-only or --placement other than the defaults) is a measurement
only where --out names its file, as above; without --out it writes under results/smoke/, never over
data_engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import machine, make_corpus, median_of, publish  # noqa: E402

OUT = os.path.join(ROOT, "results", "benchmarks", "data_engine.json")
SIZES = "50,200,1024"
FILE_MB = 10


def child(args) -> None:
    """One preparation in this fresh process: prints wall time and the driver's memory as JSON."""
    from rtune.compose import compose_config
    from rtune.data.pipeline import prepare_data
    from rtune.driver.preflight import finalize
    from rtune.memory import peak_rss_mb, rss_mb

    start = time.perf_counter()
    if args.engine == "ray":
        import ray

        from rtune.driver.cluster import init_local_ray, worker_env

        if args.address:
            ray.init(address=args.address, logging_level="warning", runtime_env={"env_vars": worker_env(False)})
        else:
            init_local_ray(num_cpus=os.cpu_count() or 1)
    init_s = time.perf_counter() - start
    cfg = finalize(compose_config([f"data.path={args.corpus}", "data.data_dir=null", "data.seq_len=1024",
                                   f"data.engine={args.engine}", f"model.tokenizer={args.tokenizer}",
                                   f"storage_path={args.work}/runs"]))
    before_mb = rss_mb()
    start = time.perf_counter()
    prepared, _ = prepare_data(cfg)
    stages = {}
    if args.engine == "ray":  # its two cluster stages, from the manifest
        with open(os.path.join(os.path.dirname(prepared.train_path), "manifest.json")) as f:
            manifest = json.load(f)
        stages = {k: manifest[k] for k in ("plan_s", "tokenize_s", "tokenizer_actors")}
    prepare_s = time.perf_counter() - start
    print("RESULT " + json.dumps({**stages, "prepare_s": round(prepare_s, 1), "ray_init_s": round(init_s, 1),
                                  "driver_rss_before_mb": round(before_mb), "driver_peak_rss_mb": round(peak_rss_mb()),
                                  "train_tokens": prepared.train_tokens, "train_rows": prepared.train_blocks}))


def plain_tokenize(tokenizer_dir: str, files: list) -> None:
    """What one tokenizer actor does per file, in a plain process: the box's own scaling ceiling."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    from rtune.data.ray_tasks import docs_of

    tokenizer = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
    for path in files:
        for docs in docs_of(path, "content", 10**12):
            tokenizer.encode_batch_fast(docs, add_special_tokens=False)


def ceiling(tokenizer_dir: str, corpus: str, n_files: int = 8) -> dict:
    """Wall time of n_files tokenized by one plain process, and by two processes taking half each."""
    files = sorted(os.path.join(corpus, f) for f in os.listdir(corpus))[:n_files]
    code = "import sys; sys.path.insert(0, sys.argv[1]); from scripts.bench.data_engine import plain_tokenize; " \
           "plain_tokenize(sys.argv[2], sys.argv[3:])"

    def launch(part):
        return subprocess.Popen([sys.executable, "-c", code, ROOT, tokenizer_dir, *part])

    start = time.perf_counter()
    launch(files).wait()
    one = time.perf_counter() - start
    start = time.perf_counter()
    for proc in [launch(files[:n_files // 2]), launch(files[n_files // 2:])]:
        proc.wait()
    two = time.perf_counter() - start
    return {"files": n_files, "one_process_s": round(one, 1), "two_processes_s": round(two, 1),
            "speedup": round(one / two, 2)}


def run_child(engine: str, corpus: str, tokenizer: str, address: str = "", core: Optional[int] = None) -> dict:
    """One preparation in a fresh process (on one core, `taskset`, when `core` is given)."""
    work = tempfile.mkdtemp(prefix="rtune-bench-data-")
    env = {**os.environ, "RTUNE_CACHE_DIR": f"{work}/cache", "HF_DATASETS_CACHE": f"{work}/hf",
           # start_cluster.sh clusters use token auth; they run with --disable-usage-stats, and so does the driver
           # (as on rtune's local clusters: Ray Data asks the driver, and would start a usage-collection actor)
           **({"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"} if address else {}),
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    # The driver's tokenizer threads as a user's `python -m rtune train` has them (all cores for the datasets
    # engine's batched encode); rtune's Ray workers run one thread each (worker_env), one actor per CPU.
    env.pop("TOKENIZERS_PARALLELISM", None)
    try:
        pin = [] if core is None else ["taskset", "-c", str(core)]
        out = subprocess.run([*pin, sys.executable, __file__, "--child", engine, corpus, tokenizer, work, address],
                             env=env, capture_output=True, text=True, timeout=3600)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not lines:
            raise RuntimeError(f"{engine} on {corpus} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
        return json.loads(lines[0][len("RESULT "):])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cluster(nodes: int, pinned: bool):
    """A local cluster of `nodes` nodes x 1 CPU (`ray start`, no dashboard: on 2 cores its polling would
    take CPU from the tokenizer actors); returns (address, stop). Pinned: node i's processes (its raylet, agents
    and workers inherit the affinity of `ray start`; the head's also GCS) run on core i only, so that each node
    is one core of this box, as a node of a real cluster has its own. Shared: all of them on every core, so
    that one node's Ray processes also use the core a second node would have."""
    port = 46379
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_worker_niceness": "0"}  # as rtune's local clusters
    common = ["--num-cpus=1", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]

    def pin(i):
        return ["taskset", "-c", str(i)] if pinned else []

    subprocess.run([*pin(0), "ray", "start", "--head", f"--port={port}", "--include-dashboard=false",
                    f"--temp-dir=/tmp/rtb-{port}", *common], env=env, check=True, capture_output=True)
    for i in range(1, nodes):  # a second node on this machine needs its own agent port
        subprocess.run([*pin(i), "ray", "start", f"--address=127.0.0.1:{port}",
                        f"--dashboard-agent-listen-port={port + 10 + i}", *common],
                       env=env, check=True, capture_output=True)

    def stop():  # this box runs no other Ray while the benchmark does
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True)

    return f"127.0.0.1:{port}", stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=SIZES, help="corpus sizes in MB, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each engine per size, interleaved")
    parser.add_argument("--sizes-only", action="store_true", help="skip the cluster scaling and the ceiling")
    parser.add_argument("--scaling-only", action="store_true",
                        help="only the cluster scaling (on the largest of --sizes, in --rounds rounds) and the ceiling")
    parser.add_argument("--placement", choices=("shared", "pinned", "both"), default="both",
                        help="the scaling's nodes: sharing all cores, or pinned one core each (see cluster); both: "
                             "interleaved in each round")
    parser.add_argument("--out", help=f"default: {os.path.relpath(OUT, ROOT)} (a partial run: under results/smoke/)")
    parser.add_argument("--child", nargs=5, metavar=("ENGINE", "CORPUS", "TOKENIZER", "WORK", "ADDRESS"))
    args = parser.parse_args()
    if args.child:
        engine, corpus, tokenizer, work, address = args.child
        return child(argparse.Namespace(engine=engine, corpus=corpus, tokenizer=tokenizer, work=work,
                                        address=address))

    from rtune.model import train_bpe_tokenizer

    sizes = [6, 12] if args.quick else [int(mb) for mb in args.sizes.split(",")]
    scaling_sizes = sizes[-1:]  # the largest corpus: fixed start-up costs weigh least
    work = tempfile.mkdtemp(prefix="rtune-bench-corpora-")
    report = {"machine": machine(), "file_mb": FILE_MB, "seq_len": 1024,
              "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds,
              "what": "prepare_data wall time (excludes ray.init, reported apart) and the driver's peak RSS "
                      "(VmHWM), fresh process, empty caches, same tokenizer", "sizes": [], "scaling": []}
    try:
        import datasets

        sample = datasets.load_dataset(os.path.join(ROOT, "rtune", "sample_data", "rust_sample"),
                                       data_dir="data/rust", split="train")["content"]
        tokenizer_dir = os.path.join(work, "tokenizer")
        train_bpe_tokenizer(iter(sample), 8192, tokenizer_dir)
        corpora = {}
        for mb in sizes:
            corpus = os.path.join(work, f"corpus-{mb}")
            corpora[mb] = (corpus, make_corpus(corpus, mb, FILE_MB) / 2**20)
            if args.scaling_only:
                continue
            row = {"corpus_mb": round(corpora[mb][1]), "files": len(os.listdir(corpus))}
            runs = {"datasets": [], "ray": []}
            for r in range(args.rounds):  # interleaved, order swapped each round: drift hits both engines alike
                for engine in (("datasets", "ray") if r % 2 == 0 else ("ray", "datasets")):
                    runs[engine].append(run_child(engine, corpus, tokenizer_dir))
                    print(f"{mb} MB {engine} (round {r + 1}): {runs[engine][-1]}", flush=True)
            for engine, engine_runs in runs.items():
                row[engine] = median_of(engine_runs)
            if args.rounds > 1:
                row["wall_ratio_per_round"] = [round(r_["prepare_s"] / d["prepare_s"], 2)
                                               for r_, d in zip(runs["ray"], runs["datasets"])]
            assert row["datasets"]["train_tokens"] == row["ray"]["train_tokens"]
            report["sizes"].append(row)
        placements = ["shared", "pinned"] if args.placement == "both" else [args.placement]
        for mb in [] if args.sizes_only else scaling_sizes:
            corpus, size_mb = corpora[mb]
            runs = {(placement, nodes): [] for placement in placements for nodes in (1, 2)}
            for r in range(args.rounds):  # interleaved, order swapped each round
                for placement in placements:
                    for nodes in ((1, 2) if r % 2 == 0 else (2, 1)):
                        pinned = placement == "pinned"
                        address, stop = cluster(nodes, pinned)
                        try:  # the driver runs on the head node (pinned: on its core)
                            result = run_child("ray", corpus, tokenizer_dir, address, core=0 if pinned else None)
                        finally:
                            stop()
                        result["mb_per_s"] = round(size_mb / result["prepare_s"], 2)
                        runs[placement, nodes].append(result)
                        print(f"{mb} MB, {nodes} node(s) x 1 CPU, {placement} (round {r + 1}): {result}", flush=True)
            for placement in placements:
                one, two = runs[placement, 1], runs[placement, 2]
                speedups = [round(b["mb_per_s"] / a["mb_per_s"], 2) for a, b in zip(one, two)]
                scaling = {"corpus_mb": round(size_mb), "placement": placement,
                           "1_node_x_1_cpu": median_of(one), "2_node_x_1_cpu": median_of(two),
                           "speedup": statistics.median(speedups)}
                if args.rounds > 1:
                    scaling["speedup_per_round"] = speedups
                report["scaling"].append(scaling)
        if not args.sizes_only:
            report["plain_process_ceiling"] = ceiling(tokenizer_dir, corpora[sizes[-1]][0])
            print(f"ceiling: {report['plain_process_ceiling']}", flush=True)
        peaks = [row["ray"]["driver_peak_rss_mb"] for row in report["sizes"]]
        if peaks:
            report["ray_driver_peak_growth"] = round(max(peaks) / min(peaks) - 1, 3)
        report["wall_ratio_ray_over_datasets"] = [round(r["ray"]["prepare_s"] / r["datasets"]["prepare_s"], 2)
                                                  for r in report["sizes"]]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    partial = args.sizes != SIZES or args.sizes_only or args.scaling_only or args.placement != "both"
    publish(report, args.out or OUT, smoke=args.quick or (partial and not args.out))


if __name__ == "__main__":
    main()
