"""Chat, instruction and prompt-completion records: rendering, which tokens train, bad records, eval_path."""

from __future__ import annotations

import json

import pytest
from conftest import compose

from rtune.data.formats import encode_conversation, encode_record, record_messages
from rtune.data.pipeline import prepare_data
from rtune.data.templates import apply_template, end_of_turn
from rtune.driver.preflight import finalize
from rtune.errors import UserError
from rtune.model import train_bpe_tokenizer
from rtune.tokens import IGNORE

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Write a function that adds one."},
    {"role": "assistant", "content": "fn add_one(x: i32) -> i32 {\n    x + 1\n}\n"},
    {"role": "user", "content": "And a test?"},
    {"role": "assistant", "content": "  #[test]\nfn t() { assert_eq!(add_one(1), 2); }"},
]


@pytest.fixture(scope="module")
def base_tokenizer(tmp_path_factory):
    texts = ["fn main() { let x = 1; }", "You are terse. Write a function that adds one.", "assert_eq!(a, b);"] * 50
    return train_bpe_tokenizer(texts, 500, str(tmp_path_factory.mktemp("tok") / "bpe"))


def fresh(tokenizer, template):
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    apply_template(tokenizer, template)
    return tokenizer


def trained_runs(tokenizer, ids, labels):
    """The decoded text of each contiguous run of tokens that carry the loss."""
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


@pytest.mark.parametrize("template, end, trims", [("chatml", "<|im_end|>", False), ("llama3", "<|eot_id|>", True)])
def test_trained_tokens_are_exactly_the_assistant_replies(base_tokenizer, template, end, trims):
    tokenizer = fresh(base_tokenizer, template)
    assert end_of_turn(tokenizer) == end and end in tokenizer.get_vocab()
    ids, labels = encode_conversation(tokenizer, CONVERSATION, "assistant", "r0")
    replies = [m["content"].strip() if trims else m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    assert trained_runs(tokenizer, ids, labels) == [reply + end for reply in replies]
    # the whole rendering round-trips, so nothing was lost on the way to tokens
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)

    ids, labels = encode_conversation(tokenizer, CONVERSATION, "last_assistant", "r0")
    assert trained_runs(tokenizer, ids, labels) == [replies[-1] + end]
    ids, labels = encode_conversation(tokenizer, CONVERSATION, "all", "r0")
    assert labels == ids


def test_sharegpt_instruction_and_prompt_completion_records(base_tokenizer):
    tokenizer = fresh(base_tokenizer, "chatml")
    sharegpt = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    assert record_messages(sharegpt, "chat", "messages", "r") == [{"role": "user", "content": "hi"},
                                                                   {"role": "assistant", "content": "hello"}]
    alpaca = {"instruction": "Add one.", "input": "x = 1", "output": "2"}
    ids, labels = encode_record(alpaca, "instruction", tokenizer, "content", "messages", "assistant", "r")
    assert trained_runs(tokenizer, ids, labels) == ["2<|im_end|>"]
    assert "Add one.\n\nx = 1" in tokenizer.decode(ids)
    ids, labels = encode_record({"prompt": "fn one() ->", "completion": " u8 { 1 }"}, "prompt_completion", tokenizer,
                                "content", "messages", "assistant", "r")
    assert trained_runs(tokenizer, ids, labels) == [" u8 { 1 }" + tokenizer.eos_token]
    assert tokenizer.decode(ids) == "fn one() -> u8 { 1 }" + tokenizer.eos_token
    assert encode_conversation(tokenizer, [{"role": "user", "content": "no reply"}], "assistant", "r") is None


@pytest.mark.parametrize("record, message", [
    ({"messages": "hello"}, "r7: field 'messages' must be a non-empty list of {role, content} messages, got str"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "r7: messages[0] has role 'robot'; expected one of system"),
    ({"messages": [{"role": "user", "content": 5}]}, "r7: messages[0] (user) must have text content, got int"),
    ({"conversations": [{"from": "bot", "value": "x"}]}, "r7: conversations[0] has speaker 'bot'"),
])
def test_malformed_records_name_the_record_field_and_expectation(base_tokenizer, record, message):
    tokenizer = fresh(base_tokenizer, "chatml")
    with pytest.raises(UserError) as err:
        encode_record(record, "chat", tokenizer, "content", "messages", "assistant", "r7")
    assert str(err.value).startswith(message)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_records_without_a_reply_are_skipped_and_counted(tmp_path):
    chats = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
             for i in range(30)]
    lonely = [{"messages": [{"role": "user", "content": f"nobody answers {i}"}]} for i in range(5)]
    path = _write(tmp_path / "c.jsonl", chats + lonely)
    prepared, _ = prepare_data(finalize(compose(f"data.path={path}", "data.format=chat", "data.seq_len=64",
                                                "data.val_fraction=0.2")))
    assert prepared.skipped_no_reply == 5
    assert prepared.train_documents + prepared.val_documents == 30
    only_lonely = _write(tmp_path / "l.jsonl", lonely)
    with pytest.raises(UserError, match="no train samples left in .*: all 4 had no assistant reply"):
        prepare_data(finalize(compose(f"data.path={only_lonely}", "data.format=chat", "data.seq_len=64")))


def test_eval_path_is_the_validation_set_and_nothing_is_held_out(tmp_path):
    train = [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(40)]
    held = [{"instruction": f"Say {i} twice.", "output": f"{i} {i}"} for i in range(6)]
    cfg = finalize(compose(f"data.path={_write(tmp_path / 't.jsonl', train)}", "data.format=instruction",
                           f"data.eval_path={_write(tmp_path / 'e.jsonl', held)}", "data.seq_len=64"))
    prepared, _ = prepare_data(cfg)
    assert prepared.train_documents == 40 and prepared.val_documents == 6
    with_split, _ = prepare_data(finalize(compose(f"data.path={tmp_path / 't.jsonl'}", "data.format=instruction",
                                                  "data.seq_len=64")))
    assert with_split.train_documents + with_split.val_documents == 40 and with_split.val_documents >= 1


def test_long_samples_are_dropped_or_truncated_and_counted(tmp_path):
    rows = [{"prompt": "p " * 3, "completion": "c " * n} for n in (2, 3, 200, 4, 300)] * 4
    path = _write(tmp_path / "pc.jsonl", rows)
    dropped, _ = prepare_data(finalize(compose(f"data.path={path}", "data.format=prompt_completion",
                                               "data.seq_len=32", "data.eval_path=" + path)))
    assert dropped.dropped_too_long == 16 and dropped.truncated == 0  # 2 long ones x 4, in train and in eval
    cut, _ = prepare_data(finalize(compose(f"data.path={path}", "data.format=prompt_completion", "data.seq_len=32",
                                           "data.truncation=truncate", "data.eval_path=" + path)))
    assert cut.truncated == 16 and cut.dropped_too_long == 0 and cut.train_documents == 20


def test_bundled_chat_set_is_varied_and_long_enough():
    import os

    import rtune

    path = os.path.join(os.path.dirname(rtune.__file__), "sample_data/rust_chat/data.jsonl")
    records = [json.loads(line) for line in open(path)]
    assert len(records) >= 1000
    assert sum(r["messages"][0]["role"] == "system" for r in records) >= 100
    assert sum(sum(m["role"] == "assistant" for m in r["messages"]) > 1 for r in records) >= 200
    asked = {" ".join(m["content"] for m in r["messages"] if m["role"] == "user") for r in records}
    assert len(asked) == len(records)  # no conversation asks what another one asks
    kinds = {"Write": 0, "explain": 0, "test": 0, "error": 0}
    for r in records:
        text = " ".join(m["content"] for m in r["messages"] if m["role"] == "user")
        for kind in kinds:
            kinds[kind] += kind in text
    assert min(kinds.values()) >= 100, kinds


def test_preference_pairs_train_only_the_replies_and_share_a_row(base_tokenizer, tmp_path):
    from rtune.data.formats import encode_preference

    tokenizer = fresh(base_tokenizer, "chatml")
    record = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add one?"}],
              "chosen": [{"role": "assistant", "content": "x + 1"}], "rejected": "x - 1"}
    (c_ids, c_labels), (r_ids, r_labels) = encode_preference(record, tokenizer, "r")
    assert trained_runs(tokenizer, c_ids, c_labels) == ["x + 1<|im_end|>"]
    assert trained_runs(tokenizer, r_ids, r_labels) == ["x - 1<|im_end|>"]
    earlier = {"prompt": [{"role": "user", "content": "Add one?"}, {"role": "assistant", "content": "x + 1"},
                          {"role": "user", "content": "Add two?"}], "chosen": "x + 2", "rejected": "x + 1"}
    (c_ids, c_labels), (r_ids, r_labels) = encode_preference(earlier, tokenizer, "r")
    assert trained_runs(tokenizer, c_ids, c_labels) == ["x + 2<|im_end|>"]  # the prompt's own reply: context only
    assert trained_runs(tokenizer, r_ids, r_labels) == ["x + 1<|im_end|>"]
    assert tokenizer.decode(r_ids).count("x + 1") == 2
    assert encode_preference({"prompt": "p", "chosen": "same", "rejected": "same"}, tokenizer, "r") is None
    with pytest.raises(UserError, match="r: field 'prompt' must end with a user"):
        encode_preference({"prompt": [{"role": "assistant", "content": "a"}], "chosen": "b", "rejected": "c"},
                          tokenizer, "r")

    rows = [{"prompt": f"Question {i}?", "chosen": f"Right {i}.", "rejected": f"Wrong {i}."} for i in range(30)]
    rows += [{"prompt": "Same?", "chosen": "yes", "rejected": "yes"}] * 3
    path = _write(tmp_path / "p.jsonl", rows)
    prepared, _ = prepare_data(finalize(compose(f"data.path={path}", "data.format=preference", "objective=dpo",
                                                "data.seq_len=64", f"data.eval_path={path}")))
    assert prepared.skipped_identical == 6 and prepared.train_documents == 30  # 3 identical, in train and in eval
    import numpy as np

    sequences = np.load(f"{prepared.train_path}/sequence_ids.npy")
    for row in sequences:  # every pair whole inside one row: 2k and 2k + 1 together
        present = set(row[row >= 0].tolist())
        assert all((k ^ 1) in present for k in present)
    assert len({k for row in sequences for k in row[row >= 0].tolist()}) == 60
