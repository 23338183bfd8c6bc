"""Packing keeps every token exactly once; splits are disjoint; loading and caching work."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import compose

from rtune.data.packing import PAD, pack
from rtune.data.pipeline import prepare_data
from rtune.data.prepared import split_documents
from rtune.data.rows import PackedRows, save_rows
from rtune.data.sources import load_records
from rtune.driver.preflight import finalize
from rtune.errors import UserError


@pytest.mark.parametrize("seq_len", [1, 5, 16, 64])
def test_pack_keeps_every_token_once_in_order(seq_len):
    rng = np.random.default_rng(seq_len)
    eos = 0
    docs = [rng.integers(1, 500, size=rng.integers(1, 40)).tolist() + [eos] for _ in range(25)]
    blocks = pack(docs, None, seq_len, "concat").arrays["input_ids"]
    expected = [tok for doc in docs for tok in doc]
    flat = blocks.reshape(-1)
    assert blocks.shape[1] == seq_len
    assert flat[flat != PAD].tolist() == expected          # every token once, in order, EOS after each doc
    assert (flat[len(expected):] == PAD).all()              # padding only at the very end ...
    assert (flat == PAD).sum() < seq_len                    # ... and less than one block of it


def test_split_is_disjoint_and_complete():
    for n in (2, 3, 10, 1000):
        train, val = split_documents(n, 0.05, seed=7)
        assert len(train) >= 1 and len(val) >= 1
        assert set(train).isdisjoint(val) and sorted({*train, *val}) == list(range(n))
    assert split_documents(100, 0.1, 1)[1].tolist() == split_documents(100, 0.1, 1)[1].tolist()


def test_bundled_corpus_is_realistic_rust_in_the_stack_layout():
    cfg = compose()
    docs = load_records(cfg.data)
    path = os.path.join(os.path.dirname(__import__("rtune").__file__), "sample_data/rust_sample/data/rust/data.json")
    records = [json.loads(line) for line in open(path)]
    assert sum(r["size"] for r in records) >= 200_000
    assert {"content", "path", "size", "lang", "repository_name", "licenses"} <= set(records[0])
    assert all(r["lang"] == "Rust" and r["path"].endswith(".rs") for r in records)
    assert len({r["content"] for r in records}) == len(records)
    assert len(docs) == len(records) and "fn " in docs[0]["content"]


def test_prepare_splits_by_document_and_caches(tmp_path):
    cfg = finalize(compose("data.seq_len=64"))
    prepared, tokenizer = prepare_data(cfg)
    docs = load_records(cfg.data)
    train_idx, val_idx = split_documents(len(docs), cfg.data.val_fraction, cfg.seed)
    assert prepared.train_documents == len(train_idx) and prepared.val_documents == len(val_idx)
    # The packed validation blocks are exactly the validation documents' tokens: none trained on.
    val_tokens = [tokenizer(docs[int(i)]["content"], add_special_tokens=False)["input_ids"] for i in val_idx]
    val_blocks = np.load(os.path.join(prepared.val_path, "input_ids.npy"))
    expected = [t for doc in val_tokens for t in (*doc, tokenizer.eos_token_id)]
    assert val_blocks[val_blocks != PAD].tolist() == expected
    mtime = os.path.getmtime(prepared.train_path)
    again, _ = prepare_data(cfg)
    assert again == prepared and os.path.getmtime(prepared.train_path) == mtime  # served from the cache
    item = PackedRows(prepared.train_path, tokenizer.pad_token_id)[0]
    assert item["input_ids"].shape == (64,) and (item["labels"] == item["input_ids"]).all()


def test_last_block_padding_is_masked_from_the_loss(tmp_path):
    rows = pack([[5, 6, 7, 0]], None, 8, "concat")
    path = str(tmp_path / "rows")
    save_rows(path, rows, {})
    item = PackedRows(path, pad_token_id=0)[0]
    assert item["labels"].tolist() == [5, 6, 7, 0, -100, -100, -100, -100]
    assert item["input_ids"].tolist() == [5, 6, 7, 0, 0, 0, 0, 0]
    assert item["position_ids"].tolist() == list(range(8)) and int(item["n_tokens"]) == 4


def _write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def test_local_jsonl_parquet_and_hub_layout_dirs_load(tmp_path):
    rows = [{"text": f"fn f{i}() -> u32 {{ {i} }}"} for i in range(6)]
    _write_jsonl(tmp_path / "a.jsonl", rows)
    import pandas as pd

    pd.DataFrame(rows).to_parquet(tmp_path / "b.parquet")
    (tmp_path / "repo/data/rust").mkdir(parents=True)
    _write_jsonl(tmp_path / "repo/data/rust/data.json", rows)
    for overrides in ([f"data.path={tmp_path / 'a.jsonl'}"], [f"data.path={tmp_path / 'b.parquet'}"],
                      [f"data.path={tmp_path / 'repo'}", "data.data_dir=data/rust"]):
        docs = load_records(finalize(compose("data.text_field=text", *overrides)).data)
        assert len(docs) == 6


def test_missing_field_names_the_fields_found(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "id": 1}, {"text": "y", "id": 2}])
    cfg = finalize(compose(f"data.path={tmp_path / 'a.jsonl'}"))
    with pytest.raises(UserError, match=r"data.text_field='content'.*fields found: text, id"):
        load_records(cfg.data)


def test_empty_text_is_refused(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"content": "   "}, {"content": ""}, {"content": None}])
    with pytest.raises(UserError, match="has no text in field 'content'"):
        load_records(finalize(compose(f"data.path={tmp_path / 'a.jsonl'}")).data)
