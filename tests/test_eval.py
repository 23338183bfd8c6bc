"""Evaluation that runs the code a model writes: pass@k, benchmark files, the bundled rust_eval, `rtune eval`,
`rtune generate prompts=` on the cluster, evaluation during training, and lm-evaluation-harness."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import compose, tiny_overrides

from rtune.data.benchmarks import load_benchmark, to_check
from rtune.errors import UserError
from rtune.passk import mean_pass_at_k, pass_at_k
from rtune.verifiers import check_one, check_rust, rust_program

ROOT = Path(__file__).resolve().parent.parent
HAS_RUSTC = os.path.exists(os.path.expanduser("~/.cargo/bin/rustc")) or \
    subprocess.run(["which", "rustc"], capture_output=True).returncode == 0
needs_rustc = pytest.mark.skipif(not HAS_RUSTC, reason="rustc is not installed: Rust checks cannot run")


def test_pass_at_k_against_hand_computations():
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert pass_at_k(5, 2, 4) == 1.0  # n - c = 3 < k: every 4-subset holds a pass
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(200, 13, 10) == pytest.approx(1 - math.comb(187, 10) / math.comb(200, 10))
    assert mean_pass_at_k([(5, 2), (5, 0), (5, 5)], [1, 5]) == pytest.approx({"pass@1": (0.4 + 0 + 1) / 3,
                                                                            "pass@5": (1 + 0 + 1) / 3})
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def _task(**fields):
    task = {"task_id": "t/0", "prompt": "pub fn one() -> i32 {\n", "test": "#[cfg(test)]\nmod tests {}\n",
            "entry_point": "one"}
    return json.dumps({**task, **fields})


@pytest.mark.parametrize("lines, message", [
    (["{not json"], "line 1 is not valid JSON"),
    (["[1, 2]"], "line 1: a task must be a JSON object"),
    ([_task(), json.dumps({"task_id": "t/1", "prompt": "pub fn x() {\n", "entry_point": "x"})],
     "line 2 \\(task 't/1'\\): field 'test' is missing"),
    ([_task(prompt=7)], "line 1 \\(task 't/0'\\): field 'prompt' must be a non-empty string"),
    ([_task(entry_point="two")], "field 'prompt' does not declare `fn two`"),
    ([_task(test="fn helper() {}")], "field 'test' holds no #\\[test\\] functions"),
    ([_task(), _task()], "line 2 \\(task 't/0'\\): field 'task_id' repeats"),
    ([""], "holds no tasks"),
])
def test_every_malformed_benchmark_record_is_one_line_naming_record_and_field(tmp_path, lines, message):
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=message) as err:
        load_benchmark(str(path))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="field 'canonical_solution' is missing"):
        (tmp_path / "ok.jsonl").write_text(_task() + "\n")
        load_benchmark(str(tmp_path / "ok.jsonl"), need_canonical=True)


@needs_rustc
def test_rust_eval_canonical_solutions_pass_and_todo_bodies_fail():
    """The bundled benchmark is sound: 100+ tasks, each canonical solution passes its tests in the sandbox and a
    `todo!()` body fails them; no task shares a function with the chat and preference sets."""
    tasks = load_benchmark("rust_eval").tasks
    assert len(tasks) >= 100
    jobs = [(t, t["canonical_solution"], "passed") for t in tasks] + [(t, "    todo!()\n}\n", "failed") for t in tasks]
    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(lambda job: check_rust(rust_program(job[0]["prompt"], job[1], job[0]["test"]), True,
                                                        5.0).status, jobs))
    wrong = [(job[0]["task_id"], job[2], status) for job, status in zip(jobs, statuses) if status != job[2]]
    assert wrong == []
    others = "".join((ROOT / "rtune/sample_data" / name / "data.jsonl").read_text()
                     for name in ("rust_chat", "rust_preference"))
    assert [t["entry_point"] for t in tasks if f"fn {t['entry_point']}(" in others] == []


@needs_rustc
def test_chat_replies_and_completions_become_whole_programs():
    task = next(t for t in load_benchmark("rust_eval").tasks if t["prompt"].startswith("use "))
    body = task["canonical_solution"]
    record, completion = to_check(task, body[:-2], "completion", stopped_at="\n}")  # generation stopped at "\n}"
    assert check_one("rust_tests", record, completion).status == "passed"
    function = task["prompt"][task["prompt"].index("pub fn"):] + body
    reply = f"Here it is:\n\n```rust\n{function}```\n\nIt walks the input once."
    record, completion = to_check(task, reply, "chat")
    assert check_one("rust_tests", record, completion).status == "passed"  # the prefix's `use` lines kept
    uses = "".join(line + "\n" for line in task["prompt"].splitlines() if line.startswith("use "))
    record, completion = to_check(task, f"```rust\n{uses}\n{function}```", "chat")
    assert check_one("rust_tests", record, completion).status == "passed"  # restated: not doubled


def _tiny_model_dir(path: Path) -> str:
    """A 2-layer GPT-2 built from config with a BPE trained on rust_eval: a model directory, no training."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rtune.model import train_bpe_tokenizer

    if (path / "config.json").exists():
        return str(path)
    tasks = load_benchmark("rust_eval").tasks
    tokenizer = train_bpe_tokenizer([t["prompt"] + t["canonical_solution"] for t in tasks] * 2, 600, str(path))
    config = AutoConfig.for_model("gpt2", n_layer=2, n_embd=64, n_head=4, n_positions=512, vocab_size=len(tokenizer),
                                  bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(path))
    return str(path)


@pytest.mark.slow
@needs_rustc
def test_rtune_eval_scores_canonical_solutions_at_100_percent_and_a_model_at_its_figure(ray_cluster, tmp_path):
    from rtune.driver.evaluate import RESULTS, SUMMARY, parse_eval_args, run_eval

    models, canonical, overrides = parse_eval_args(["--canonical", "max_tasks=30", f"storage_path={tmp_path}",
                                                    "run_name=canonical"])
    report = run_eval(compose(*overrides), models, canonical)
    assert report["pass@1"] == 1.0 and report["tasks"] == 30 and report["statuses"]["passed"] == 30
    assert report["benchmark"] == "rust_eval" and len(report["benchmark_sha256"]) == 64
    model = _tiny_model_dir(tmp_path / "tiny")
    models, _, overrides = parse_eval_args([model, "max_tasks=4", "samples=3", "k=[1,3]", "temperature=0.9",
                                            "max_new_tokens=24", f"storage_path={tmp_path}", "run_name=tiny-eval",
                                            "generation.shard_size=2"])
    report = run_eval(compose(*overrides), models)
    run_dir = tmp_path / "tiny-eval"
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert summary["model"] == model and summary["tasks"] == 4 and summary["samples"] == 3
    assert 0 <= summary["pass@1"] <= summary["pass@3"] <= 1 and sum(summary["statuses"].values()) == 12
    rows = [json.loads(line) for line in (run_dir / RESULTS).read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [f"rust_eval/{i}" for i in range(4)]
    assert all(len(r["samples"]) == 3 and {"completion", "status", "seconds"} <= set(r["samples"][0]) for r in rows)
    assert (run_dir / "pass_at_k.png").stat().st_size > 1000
    # the same eval again finds its completions on disk and checks them again: the same figures
    again = run_eval(compose(*overrides), models)
    assert again["generation"]["skipped"] == again["generation"]["shards"] == 2
    assert again["pass@1"] == summary["pass@1"]


def _generate_cli(model, prompts, output, *extra):
    return [sys.executable, "-m", "rtune", "generate", model, f"prompts={prompts}", f"output={output}", "n=2",
            "temperature=0.8", "max_new_tokens=48", "shard_size=2", "num_actors=1", *extra]


@pytest.mark.slow
def test_an_interrupted_generate_run_skips_the_shards_it_finished(tmp_path):
    model = _tiny_model_dir(tmp_path / "tiny")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"pub fn f{i}(x: i32) -> i32 {{", "id": i}) + "\n"
                               for i in range(24)))
    out = tmp_path / "out.jsonl"
    shards = Path(f"{out}.shards")
    first = subprocess.Popen(_generate_cli(model, prompts, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(shards.glob("shard-*.jsonl"))) < 3 and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = sorted(p.name for p in shards.glob("shard-*.jsonl"))
    assert 3 <= len(finished) < 12 and not out.exists(), finished
    stamps = {name: (shards / name).stat().st_mtime_ns for name in finished}
    again = subprocess.run(_generate_cli(model, prompts, out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(finished)} found finished and skipped" in again.stdout
    assert {name: (shards / name).stat().st_mtime_ns for name in finished} == stamps  # not written again
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(24)) and all(len(r["completions"]) == 2 for r in rows)
    straight = subprocess.run(_generate_cli(model, prompts, tmp_path / "straight.jsonl"), capture_output=True,
                              text=True, timeout=600)
    assert straight.returncode == 0 and (tmp_path / "straight.jsonl").read_text() == out.read_text()
    other = subprocess.run(_generate_cli(model, prompts, out, "seed=5"), capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "generated with other settings (sampling)" in other.stderr


@pytest.mark.slow
@needs_rustc
def test_eval_during_training_logs_pass_at_1_at_its_steps_on_two_workers(ray_cluster, tmp_path):
    from rtune.driver.launch import train
    from rtune.metrics import read_metrics

    summary = train(compose(*tiny_overrides(tmp_path, "gen-eval", "num_workers=2", "trainer.max_steps=6",
                                            "trainer.eval_every_steps=3", "trainer.checkpoint_every_steps=3",
                                            "trainer.eval_generate_every_steps=3", "eval.max_tasks=5",
                                            "eval.max_new_tokens=16", "trainer.checkpoint_metric=eval_pass@1",
                                            "trainer.checkpoint_mode=max")))
    records = read_metrics(os.path.join(summary["run_dir"], "metrics.jsonl"))
    measured = [(r["step"], r["eval_pass@1"]) for r in records if "eval_pass@1" in r]
    assert [step for step, _ in measured] == [0, 3, 6] and all(0 <= v <= 1 for _, v in measured)
    assert summary["eval_pass@1"] == measured[-1][1] and summary["best_checkpoint"] is not None
    marker = json.loads((Path(summary["latest_checkpoint"]) / "rtune_checkpoint.json").read_text())
    assert marker["metrics"]["eval_pass@1"] == measured[-1][1]


@pytest.mark.slow
def test_lm_eval_harness_runs_a_task_defined_from_a_local_file(tmp_path):
    pytest.importorskip("lm_eval")
    from rtune.driver.evaluate import parse_eval_args, run_eval

    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps({"question": f"{a} + {b} =", "choices": [str(a + b), str(a + b + 1)],
                                        "label": 0}) + "\n" for a, b in [(1, 2), (3, 4), (5, 6), (2, 2)]))
    task = tmp_path / "arith.yaml"
    task.write_text(f"task: rtune_arith\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
                    "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
                    "doc_to_choice: '{{choices}}'\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n")
    model = _tiny_model_dir(tmp_path / "tiny")
    models, _, overrides = parse_eval_args([model, "harness=lm_eval", f"tasks=[{task}]", f"storage_path={tmp_path}",
                                            "run_name=harness"])
    report = run_eval(compose(*overrides), models)
    assert report["harness"] == "lm_eval" and 0 <= report["tasks"]["rtune_arith"]["acc,none"] <= 1
    assert json.loads((tmp_path / "harness" / "eval_summary.json").read_text())["tasks"] == report["tasks"]
    with pytest.raises(UserError, match="unknown lm-eval task"):
        run_eval(compose(*parse_eval_args([model, "harness=lm_eval", "tasks=[no_such_task_anywhere]",
                                           f"storage_path={tmp_path}", "run_name=bad"])[2]), [model])


@pytest.mark.parametrize("overrides, message", [
    (["eval.k=[1,10]"], "eval.k=\\[1, 10\\] must list whole numbers from 1 to eval.samples=1: e.g. k=\\[1\\] or "
                        "samples=10"),
    (["eval.prompt_style=fim"], "eval.prompt_style must be completion or chat, got 'fim'"),
    (["eval.harness=lm_eval"], "eval.harness=lm_eval needs eval.tasks"),
    (["trainer.checkpoint_metric=eval_pass@1", "trainer.checkpoint_mode=max"],
     "measured every trainer.eval_generate_every_steps=None steps: set it to a divisor of "
     "trainer.checkpoint_every_steps=100"),
    (["trainer.eval_generate_every_steps=30", "trainer.checkpoint_metric=eval_pass@1"], "a divisor of"),
    (["generation.shard_size=0"], "generation.shard_size must be at least 1"),
])
def test_eval_settings_that_cannot_work_are_one_line(overrides, message):
    from rtune.config import validate

    with pytest.raises(UserError, match=message):
        validate(compose(*overrides))


def test_sweeps_rank_runs_by_the_search_metric(tmp_path):
    from rtune.driver.sweep import row, write_summary

    rows = [row("a", "x=1", "finished", {"eval_loss": 1.0, "eval_pass@1": 0.2}, metric="eval_pass@1", mode="max"),
            row("b", "x=2", "finished", {"eval_loss": 2.0, "eval_pass@1": 0.5}, metric="eval_pass@1", mode="max"),
            row("c", "x=3", "failed", error="boom", metric="eval_pass@1", mode="max")]
    paths = write_summary(str(tmp_path), rows, "t", metric="eval_pass@1", mode="max")
    table = [line.split("|")[1].strip() for line in Path(paths["md"]).read_text().splitlines() if line.startswith("| ")]
    assert table[2:] == ["b", "a", "c"]  # the header and its rule, then the best eval_pass@1 first, unscored last
    assert "eval_pass@1" in Path(paths["csv"]).read_text().splitlines()[0]
