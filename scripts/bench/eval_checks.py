"""How long `rtune eval` spends checking code: rust_eval's checks as Ray tasks over the cluster's CPUs vs one after
another in one process. Each check builds a program with `rustc --test` and runs its tests in the sandbox.

The checks are the 155 canonical solutions (all pass) and 155 `todo!()` bodies (all fail their tests): 310 programs,
what an eval of 2 samples per task checks. Ray tasks of 4 checks each on a local cluster of this machine's CPUs
(started before the clock); 2 interleaved rounds, the order swapped; wall time per round.

    python scripts/bench/eval_checks.py           # writes results/benchmarks/eval_checks.json
    python scripts/bench/eval_checks.py --quick   # 20 tasks, 1 round: results/smoke/
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from scripts.bench.common import machine, publish  # noqa: E402

OUT = os.path.join(ROOT, "results", "benchmarks", "eval_checks.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 tasks, 1 round: a smoke run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()

    from rtune.data.benchmarks import load_benchmark
    from rtune.driver.cluster import init_local_ray
    from rtune.verifiers import check_many, check_one

    tasks = load_benchmark("rust_eval", 20 if args.quick else None).tasks
    items = [{"record": t, "completion": t["canonical_solution"]} for t in tasks] + \
            [{"record": t, "completion": "    todo!()\n}\n"} for t in tasks]
    init_local_ray(num_cpus=os.cpu_count() or 1)
    check_many("rust_tests", items[:2])  # Ray's workers up before the clock

    def serial():
        return [check_one("rust_tests", i["record"], i["completion"]) for i in items]

    def cluster():
        return check_many("rust_tests", items)

    runs = {"serial": [], "ray_tasks": []}
    rounds = 1 if args.quick else args.rounds
    for r in range(rounds):
        for name in (("serial", "ray_tasks") if r % 2 == 0 else ("ray_tasks", "serial")):
            start = time.perf_counter()
            checks = serial() if name == "serial" else cluster()
            seconds = time.perf_counter() - start
            passed = sum(c.status == "passed" for c in checks)
            runs[name].append({"seconds": round(seconds, 2), "passed": passed, "checks": len(checks)})
            print(name, runs[name][-1], flush=True)
    medians = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    report = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "machine": machine(),
              "date": time.strftime("%Y-%m-%d"), "checks": len(items), "rounds": rounds, "runs": runs,
              "median_seconds": medians, "speedup": round(medians["serial"] / medians["ray_tasks"], 2),
              "checks_per_s_ray_tasks": round(len(items) / medians["ray_tasks"], 1)}
    publish(report, args.out, smoke=args.quick)


if __name__ == "__main__":
    main()
