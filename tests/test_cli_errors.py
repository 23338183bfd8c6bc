"""Every user-caused error ends in one line on stderr naming the fix, exit code 2, no traceback.

Each fails in the driver's preflight, before Ray. The config and data errors call the command line's
entry point (`rtune.cli.main`, what `python -m rtune` runs) in this process: a subprocess would spend
3-6 s of imports per case for nothing. What depends on the process itself (environment read at import,
PATH, exit codes of Hydra's own flags, a full traceback) runs the real command in a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest


def run_cli(*args: str, env_extra: dict | None = None, timeout: int = 120):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "rtune", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def run_in_process(*args: str):
    """`python -m rtune <args>` as the entry point runs it, in this process: exit code, stdout, stderr."""
    from rtune.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def assert_one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("rtune: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def jsonl(tmp_path):
    def write(rows, name="d.jsonl"):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)
    return write


@pytest.mark.parametrize("args, needles", [
    (["trainer.max_stesp=5"], ["unknown config key 'trainer.max_stesp'", "did you mean trainer.max_steps"]),
    (["trainer.max_steps=many"], ["trainer.max_steps=many", "Integer"]),
    (["num_workers=0"], ["num_workers must be at least 1"]),
    (["model=llama9"], ["unknown model 'llama9'", "gpt2", "tiny_gpt2"]),
    (["data=nope"], ["unknown data 'nope'", "rust_sample", "the_stack_smol"]),
    (["data.seq_len=4096"], ["data.seq_len=4096", "context of 512"]),
    (["data.path=/no/such/dir/data.jsonl"], ["does not exist", "data.path"]),
    (["data.engine=spark"], ["data.engine must be one of datasets, ray"]),
    (["num_workers=[1,2]"], ["num_workers=[1,2] resizes the group", "trainer.max_failures=1"]),
    (["data.max_documents=8", "data.seq_len=64", "trainer.micro_batch_size=4", "trainer.global_batch_size=4096"],
     ["trainer.global_batch_size=4096 is more than the", "training rows of 64 tokens"]),
])
def test_config_and_path_errors(args, needles, tmp_path):
    assert_one_line_error(run_in_process("train", f"storage_path={tmp_path}", *args), *needles)


def test_unreachable_hub_names_the_offline_options(tmp_path):
    proc = run_cli("train", "model=gpt2", f"storage_path={tmp_path}", env_extra={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(proc, "'gpt2'", "unreachable", "model=tiny_gpt2", "model.name_or_path")


def test_unreachable_hub_dataset(tmp_path):
    proc = run_cli("train", "data=the_stack_smol", f"storage_path={tmp_path}", env_extra={"HF_DATASETS_OFFLINE": "1"})
    assert_one_line_error(proc, "bigcode/the-stack-smol", "data=rust_sample")


def test_missing_text_field_lists_fields(tmp_path, jsonl):
    path = jsonl([{"body": "fn a() {}", "lang": "Rust"}] * 3)
    assert_one_line_error(run_in_process("train", f"data.path={path}", f"storage_path={tmp_path}"),
                          "data.text_field='content'", "fields found: body, lang")


def test_dataset_without_text(tmp_path, jsonl):
    path = jsonl([{"content": ""}, {"content": "  \n"}])
    assert_one_line_error(run_in_process("train", f"data.path={path}", f"storage_path={tmp_path}"), "has no text")


CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize("rows, args, needles", [
    ([{"messages": "hello"}, CHAT], ["data.format=chat"], ["d.jsonl record 0: field 'messages' must be a non-empty list"]),
    ([CHAT, {"messages": [{"role": "bot", "content": "x"}]}], ["data.format=chat"],
     ["record 1: messages[0] has role 'bot'; expected one of system, user, assistant"]),
    ([CHAT, CHAT], [], ["these look like data.format=chat records"]),
    ([CHAT, CHAT], ["data.format=instruction"], ["data.format=instruction needs field(s) instruction, output",
                                                 "fields found: messages"]),
    ([{"messages": [{"role": "user", "content": "nobody answers"}]}] * 3, ["data.format=chat"],
     ["no train samples left", "all 2 had no assistant reply"]),
    ([{"prompt": "p " * 50, "completion": "c " * 50}] * 3, ["data.format=prompt_completion", "data.seq_len=16"],
     ["no train samples left", "were longer than 16 tokens", "raise data.seq_len or set data.truncation=truncate"]),
    ([CHAT, CHAT], ["data.format=chat", "data.chat_template=nope"], ["data.chat_template='nope' is neither"]),
])
def test_chat_data_errors(rows, args, needles, tmp_path, jsonl):
    assert_one_line_error(run_in_process("train", f"data.path={jsonl(rows)}", f"storage_path={tmp_path}", *args), *needles)


PAIR = {"prompt": "Add one?", "chosen": "x + 1", "rejected": "x - 1"}


@pytest.mark.parametrize("rows, args, needles", [
    ([{"prompt": "p", "chosen": "c"}] * 3, ["data.format=preference", "objective=dpo"],
     ["data.format=preference needs field(s) rejected", "fields found: prompt, chosen"]),
    ([PAIR] * 3, ["data.format=preference", "objective=dpo", "objective.beta=0"], ["objective.beta must be positive"]),
    ([PAIR] * 3, ["data.format=preference", "objective=dpo", "objective.loss_type=kto"],
     ["objective.loss_type must be one of sigmoid, ipo, hinge, got 'kto'"]),
    ([PAIR] * 3, ["data.format=preference"], ["data.format=preference holds pairs for a preference objective",
                                              "objective=dpo"]),
    ([CHAT] * 3, ["data.format=chat", "objective=dpo"], ["objective=dpo learns from preference pairs",
                                                         "data.format=preference"]),
    ([{"prompt": "p", "chosen": "same", "rejected": "same"}] * 3, ["data.format=preference", "objective=dpo"],
     ["no train pairs left", "2 had identical replies"]),
])
def test_preference_errors(rows, args, needles, tmp_path, jsonl):
    assert_one_line_error(run_in_process("train", f"data.path={jsonl(rows)}", f"storage_path={tmp_path}", *args), *needles)


def test_storage_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert_one_line_error(run_in_process("train", f"storage_path={blocker}/runs"), "storage_path", "not writable")


def test_full_traceback_on_request(tmp_path):
    proc = run_cli("train", "num_workers=0", f"storage_path={tmp_path}", env_extra={"RTUNE_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_hydra_flags_still_work():
    proc = run_cli("train", "--cfg", "job", "optim.lr=5e-4")
    assert proc.returncode == 0, proc.stderr
    assert "lr: 0.0005" in proc.stdout and "micro_batch_size" in proc.stdout
    helped = run_cli("train", "--help")
    assert helped.returncode == 0 and "rtune train" in helped.stdout
    assert "model: gpt2, llama3_2_1b, mistral_7b, qwen2_5_0_5b" in helped.stdout and "tiny_qwen2" in helped.stdout


def test_unknown_command():
    proc = run_cli("trian")
    assert proc.returncode == 2 and "unknown command 'trian'" in proc.stderr


@pytest.mark.parametrize("args, needles", [
    (["up", "--num-cpus", "two"], ["usage: python -m rtune up [--num-cpus N]", "a positive number"]),
    (["up", "--num-cpus", "0"], ["usage: python -m rtune up [--num-cpus N]"]),
    (["down", "now"], ["usage: python -m rtune down"]),
])
def test_up_and_down_refuse_bad_arguments(args, needles):
    assert_one_line_error(run_in_process(*args), *needles)


@pytest.mark.parametrize("args, needles", [
    (["strategy=deepspeed", "strategy.zero_stage=4"], ["strategy.zero_stage must be 1, 2 or 3"]),
    (["peft=lora", "peft.target_modules=[q_proj]"], ["peft.target_modules ['q_proj'] not found", "c_attn"]),
    (["peft=lora", "peft.target_modules=7"], ["peft.target_modules must be a list of module names, all-linear"]),
    (["strategy.offload_optimizer=cpu"], ["needs strategy=deepspeed"]),
    (["strategy=fsdp", "strategy.fsdp_state=gathered"], ["strategy.fsdp_state must be sharded or full"]),
])
def test_strategy_and_peft_errors(args, needles, tmp_path):
    assert_one_line_error(run_in_process("train", f"storage_path={tmp_path}", *args), *needles)


def test_deepspeed_without_a_compiler_says_what_to_install(tmp_path):
    bin_dir = os.path.dirname(sys.executable)  # python only: no c++, g++ or ninja on this PATH
    proc = run_cli("train", "strategy=deepspeed", f"storage_path={tmp_path}", env_extra={"PATH": bin_dir})
    if "ninja" in proc.stderr:
        pytest.skip("a C++ compiler sits next to this Python; cannot hide it")
    assert_one_line_error(proc, "no C++ compiler", "apt-get install g++")


def test_export_and_generate_refuse_bad_paths(tmp_path):
    assert_one_line_error(run_cli("export", str(tmp_path), str(tmp_path / "out")), "is not an rtune checkpoint")
    assert_one_line_error(run_cli("generate", str(tmp_path / "missing"), "prompt=fn"), "does not exist")
    assert_one_line_error(run_cli("generate", str(tmp_path), "prompt=fn"), "not an rtune checkpoint or a Hugging Face")


def test_fine_tuning_from_sharded_training_state_says_to_export_first(tmp_path):
    from transformers import AutoConfig

    ckpt = tmp_path / "checkpoint_00000004"  # what sharded FSDP leaves before the last step: shards, no model
    (ckpt / "fsdp_shards").mkdir(parents=True)
    AutoConfig.for_model("gpt2", n_layer=1, n_embd=32, n_head=2).save_pretrained(ckpt)
    assert_one_line_error(run_in_process("train", f"model.name_or_path={ckpt}", f"storage_path={tmp_path}"),
                          "holds sharded FSDP training state, not a model", f"python -m rtune export {ckpt}")


def test_non_utf8_line_is_named(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"content": "fn a() {}"}\n{"content": "caf\xe9"}\n')
    assert_one_line_error(run_in_process("train", f"data.path={path}", f"storage_path={tmp_path}"),
                          "line 2 is not valid UTF-8", "iconv")


def test_remote_code_is_refused_unless_the_user_allows_it(tmp_path):
    """A model dir whose config maps to its own Python code: rtune does not run it by default."""
    model_dir = tmp_path / "custom"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                            "AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    (model_dir / "configuration_evil.py").write_text("import os\nos.system('touch /tmp/rtune-remote-code-ran')\n")
    proc = run_cli("train", f"model.name_or_path={model_dir}", f"storage_path={tmp_path}")
    assert_one_line_error(proc, "trust_remote_code")
    assert not os.path.exists("/tmp/rtune-remote-code-ran")
