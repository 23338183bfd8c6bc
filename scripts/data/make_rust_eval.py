"""Write (and with --check, verify) the bundled `rust_eval` benchmark.

The tasks live in `rust_eval_tasks.py` next to this script; this writes them, in index order, to
`rtune/sample_data/rust_eval/rust_eval.jsonl` (one HumanEval / MultiPL-E style record per line:
task_id, prompt, canonical_solution, test, entry_point, difficulty, tags). The output is deterministic.

With `--check` it also:
  * checks the records (every field present, unique task ids and entry points, at least four assertions);
  * checks the set is held out from the chat and preference data: no entry point is a name in
    `rust_tasks.py` (its `SPECS` and `struct_specs()`), and no `fn <entry_point>(` occurs in the bundled
    rust_chat / rust_preference jsonl files;
  * compiles `prompt + canonical_solution + "\\n\\n" + test` with `rustc --edition 2021 --test` and runs it (must
    pass), and does the same with a `todo!()` body (must fail), each in a fresh temporary directory.

    python scripts/data/make_rust_eval.py            # write the jsonl
    python scripts/data/make_rust_eval.py --check    # write it, then verify every task with rustc
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from rust_eval_tasks import records  # noqa: E402

ROOT = HERE.parents[1]
SAMPLE_DATA = ROOT / "rtune/sample_data"
OUT = SAMPLE_DATA / "rust_eval/rust_eval.jsonl"
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point", "difficulty", "tags")
STUB = "    todo!()\n}\n"
TIMEOUT_S = 10
WORKERS = 2


def write(rows: List[Dict[str, object]]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def check_records(rows: List[Dict[str, object]]) -> List[str]:
    problems = []
    for i, row in enumerate(rows):
        missing = [k for k in FIELDS if not row.get(k)]
        if missing:
            problems.append(f"record {i}: missing {missing}")
            continue
        if row["task_id"] != f"rust_eval/{i}":
            problems.append(f"record {i}: task_id {row['task_id']!r}")
        prompt = str(row["prompt"])
        if f"\npub fn {row['entry_point']}(" not in prompt or not prompt.endswith(" {\n"):
            problems.append(f"{row['task_id']}: prompt does not end with the signature and its opening brace")
        if not str(row["canonical_solution"]).endswith("}\n"):
            problems.append(f"{row['task_id']}: canonical_solution does not end with `}}`")
        if str(row["test"]).count("assert") < 4:
            problems.append(f"{row['task_id']}: fewer than four assertions")
    for key in ("task_id", "entry_point"):
        values = [row.get(key) for row in rows]
        dupes = sorted({str(v) for v in values if values.count(v) > 1})
        if dupes:
            problems.append(f"duplicate {key}: {dupes}")
    return problems


def check_disjoint(rows: List[Dict[str, object]]) -> Tuple[List[str], str]:
    """Problems, and a note on what the set was checked against."""
    problems, against = [], []
    for folder in (HERE, HERE.parent):
        if (folder / "rust_tasks.py").exists():
            sys.path.insert(0, str(folder))
            import rust_tasks

            spec_names = {spec.name for spec in rust_tasks.SPECS + rust_tasks.struct_specs()}
            problems += [f"{row['task_id']}: `{row['entry_point']}` is a rust_tasks.py spec name"
                         for row in rows if row["entry_point"] in spec_names]
            against.append("rust_tasks.py")
            break
    else:
        print("note: rust_tasks.py not found in scripts/ or scripts/data/; skipping the spec-name check")
    for name in ("rust_chat", "rust_preference"):
        files = sorted((SAMPLE_DATA / name).glob("*.jsonl"))
        if not files:
            print(f"note: no {name} jsonl found; skipping that check")
            continue
        text = "".join(f.read_text(encoding="utf-8") for f in files)
        problems += [f"{row['task_id']}: `fn {row['entry_point']}(` occurs in {name}"
                     for row in rows if f"fn {row['entry_point']}(" in text]
        against.append(name)
    return problems, "disjoint from " + "/".join(against) if against else "disjointness not checked"


def compile_and_run(rustc: str, source: str) -> Tuple[str, str]:
    """("pass" | "fail" | "compile-error" | "timeout", output tail), in a fresh temporary directory."""
    with tempfile.TemporaryDirectory(prefix="rust_eval_") as tmp:
        src, binary = os.path.join(tmp, "main.rs"), os.path.join(tmp, "main")
        Path(src).write_text(source, encoding="utf-8")
        try:
            build = subprocess.run([rustc, "--edition", "2021", "--test", "--color", "never", "-o", binary, src],
                                   capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp)
            if build.returncode != 0:
                return "compile-error", build.stderr[-2000:]
            run = subprocess.run([binary], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp,
                                 env={**os.environ, "RUST_BACKTRACE": "0"})
        except subprocess.TimeoutExpired:
            return "timeout", ""
        return ("pass" if run.returncode == 0 else "fail"), (run.stdout + run.stderr)[-2000:]


def check_rustc(rows: List[Dict[str, object]], rustc: str) -> Tuple[int, int, List[str]]:
    """Canonical passes, stub failures, and problems."""
    jobs = []
    for row in rows:
        jobs.append((row, "canonical", f"{row['prompt']}{row['canonical_solution']}\n\n{row['test']}"))
        jobs.append((row, "stub", f"{row['prompt']}{STUB}\n\n{row['test']}"))
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda job: compile_and_run(rustc, job[2]), jobs))
    passes = fails = 0
    problems = []
    for (row, kind, _), (status, output) in zip(jobs, results):
        if kind == "canonical" and status == "pass":
            passes += 1
        elif kind == "stub" and status in ("fail", "compile-error"):
            fails += 1
            if status == "compile-error":
                print(f"note: {row['task_id']} ({row['entry_point']}): the todo!() stub does not compile")
        else:
            problems.append(f"{row['task_id']} ({row['entry_point']}) {kind}: {status}\n{output}")
    return passes, fails, problems


def find_rustc() -> Optional[str]:
    return shutil.which("rustc") or next((str(p) for p in [Path.home() / ".cargo/bin/rustc"] if p.exists()), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify the records and every task with rustc")
    args = parser.parse_args()
    rows = records()
    write(rows)
    print(f"wrote {len(rows)} tasks to {OUT.relative_to(ROOT)}")
    if not args.check:
        return 0
    rustc = find_rustc()
    if rustc is None:
        print("rustc not found")
        return 1
    start = time.time()
    problems = check_records(rows)
    disjoint_problems, disjoint_note = check_disjoint(rows)
    passes, fails, rustc_problems = check_rustc(rows, rustc)
    problems += disjoint_problems + rustc_problems
    for problem in problems:
        print(problem)
    print(f"rust_eval: {len(rows)} tasks, {passes} canonical pass, {fails} stubs fail, "
          f"{'NOT ' if disjoint_problems else ''}{disjoint_note}")
    print(f"checked in {time.time() - start:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
