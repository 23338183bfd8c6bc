"""The driver's memory with `data.engine=ray` when the tokenizer is a BPE trained on the corpus itself (a model built
from config): the BPE trained in a Ray task that reads the files itself (now) vs on the driver, from every document
streamed to it one file at a time (before, `--baseline-repo` at the commit that did that).

One JSONL file of each size (the file is what the old driver held at once), each preparation in a fresh process
with empty caches, the engines' local Ray started before the clock: the driver's peak resident memory (VmHWM) and
the wall time of `prepare_data`.

    python scripts/bench/bpe_driver_memory.py --baseline-repo /tmp/rtune-0cbfc32   # writes the committed JSON
    python scripts/bench/bpe_driver_memory.py --quick                              # 4 / 16 MB, results/smoke/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import machine, make_corpus, publish  # noqa: E402

OUT = os.path.join(ROOT, "results", "benchmarks", "bpe_driver_memory.json")
CHILD = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
os.environ["RTUNE_CACHE_DIR"] = sys.argv[3]
try:
    from rtune.compose import compose_config
except ImportError:  # the code before the compose module
    from rtune.cli import compose_config
try:
    from rtune.driver.preflight import finalize
except ImportError:
    from rtune.config import finalize
try:
    from rtune.driver.cluster import init_local_ray
except ImportError:
    from rtune.driver.launch import init_local_ray
from rtune.data.pipeline import prepare_data
import rtune
assert os.path.dirname(rtune.__file__).startswith(sys.argv[1]), rtune.__file__
module = sys.modules[init_local_ray.__module__]  # Ray's workers import this checkout too, not the installed one
plain_env = module.worker_env
module.worker_env = lambda use_gpu: {**plain_env(use_gpu), "PYTHONPATH": sys.argv[1]}
init_local_ray(num_cpus=os.cpu_count() or 1)
cfg = finalize(compose_config([f"data.path={sys.argv[2]}", "data.data_dir=null", "data.seq_len=1024",
                               "data.engine=ray", "model.tokenizer_vocab_size=8192",
                               f"storage_path={sys.argv[3]}/runs"]))
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
start = time.perf_counter()
prepared, tokenizer = prepare_data(cfg)
print("RESULT " + json.dumps({"prepare_s": round(time.perf_counter() - start, 1), "driver_rss_before_mb":
                              round(before), "driver_peak_rss_mb": round(status("VmHWM")),
                              "vocab": len(tokenizer), "train_tokens": prepared.train_tokens}))
"""


def measure(repo: str, corpus: str) -> dict:
    work = tempfile.mkdtemp(prefix="rtune-bpe-")
    try:
        env = {**os.environ, "PYTHONPATH": repo, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1"}
        # cwd: Ray puts the driver's working directory on its workers' path; in this repo they would import its rtune
        done = subprocess.run([sys.executable, "-c", CHILD, repo, corpus, work], capture_output=True, text=True,
                              env=env, timeout=3600, cwd=work)
        result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not result:
            raise RuntimeError(f"{repo}: {done.stderr[-2000:]}")
        return json.loads(result[-1][len("RESULT "):])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 / 16 MB files: a smoke run, not a measurement")
    parser.add_argument("--sizes", default="15,150", help="MB of the one corpus file, comma-separated")
    parser.add_argument("--baseline-repo", help="a checkout of the code before (the BPE trained on the driver)")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    sizes = [4, 16] if args.quick else [int(s) for s in args.sizes.split(",")]
    corpora = tempfile.mkdtemp(prefix="rtune-bpe-corpora-")
    report = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "machine": machine(), "sizes_mb": sizes,
              "systems": {}}
    try:
        systems = {"ray_task": ROOT, **({"driver": os.path.abspath(args.baseline_repo)} if args.baseline_repo else {})}
        for mb in sizes:
            corpus = os.path.join(corpora, f"corpus-{mb}")
            written = make_corpus(corpus, mb, file_mb=mb) / 2**20  # one file
            for name, repo in systems.items():
                result = measure(repo, corpus)
                report["systems"].setdefault(name, {})[f"{mb}MB"] = {**result, "corpus_mb": round(written, 1)}
                print(name, mb, json.dumps(result), flush=True)
    finally:
        shutil.rmtree(corpora, ignore_errors=True)
    for name, runs in report["systems"].items():
        peaks = [r["driver_peak_rss_mb"] for r in runs.values()]
        report["systems"][name]["peak_growth"] = round(max(peaks) / min(peaks) - 1, 3)
    publish(report, args.out, smoke=args.quick)


if __name__ == "__main__":
    main()
