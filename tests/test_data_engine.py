"""data.engine=ray: Ray Data tokenizes the corpus files on the cluster and writes token shards; the rows
workers read equal the datasets engine's, row for row (real Ray Data on the session's local cluster)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rtune.config import ConfigError, finalize
from tests.conftest import compose


def _corpus(root, n_files=5, docs_per_file=13):
    """Rust-like documents in several JSONL files (one with empty records), in two sub-directories."""
    rng = np.random.default_rng(0)
    words = ["fn", "let", "mut", "impl", "struct", "match", "Some(x)", "None", "self", "pub", "u64", "->", "{", "}"]
    for i in range(n_files):
        sub = root / ("b" if i % 2 else "a")
        sub.mkdir(parents=True, exist_ok=True)
        with open(sub / f"part-{i:02d}.jsonl", "w") as f:
            for j in range(docs_per_file):
                text = " ".join(rng.choice(words, size=int(rng.integers(5, 120))))
                f.write(json.dumps({"content": "" if (i == 2 and j % 4 == 0) else text, "id": j}) + "\n")
    return root


def _rows(path):
    from rtune.data.rows import PackedRows

    rows = PackedRows(path, pad_token_id=0)
    return np.stack([np.asarray(rows.input_ids[i]) for i in range(len(rows))])


def _prepare(tmp_path, engine, *extra):
    from rtune.data.pipeline import prepare_data

    cfg = finalize(compose(f"data.path={tmp_path / 'corpus'}", "data.data_dir=null", "data.seq_len=32", "model.tokenizer_vocab_size=300",
                           f"data.engine={engine}", f"storage_path={tmp_path / 'runs'}", "data.val_fraction=0.2",
                           *extra))
    return prepare_data(cfg)


@pytest.mark.parametrize("extra", [(), ("data.max_documents=40",)], ids=["all", "max_documents"])
def test_ray_engine_rows_equal_the_datasets_engine(tmp_path, ray_cluster, extra):
    _corpus(tmp_path / "corpus")
    reference, ref_tokenizer = _prepare(tmp_path, "datasets", *extra)
    prepared, tokenizer = _prepare(tmp_path, "ray", *extra)
    assert tokenizer.backend_tokenizer.to_str() == ref_tokenizer.backend_tokenizer.to_str()  # the same BPE
    for split in ("train", "val"):
        ours, theirs = _rows(getattr(prepared, f"{split}_path")), _rows(getattr(reference, f"{split}_path"))
        assert ours.shape == theirs.shape and (ours == theirs).all(), split
    for field in ("train_documents", "val_documents", "train_tokens", "val_tokens", "train_blocks", "val_blocks"):
        assert getattr(prepared, field) == getattr(reference, field), field
    root = os.path.dirname(prepared.train_path)
    assert root.startswith(str(tmp_path / "runs" / "data_cache"))  # under storage_path, not the driver's cache
    manifest = json.load(open(os.path.join(root, "manifest.json")))
    assert manifest["files"] == 5 and sum(manifest["files_per_node"].values()) == 5
    # Prepared once: a second run finds the manifest and tokenizes nothing.
    before = os.path.getmtime(os.path.join(root, "manifest.json"))
    again, _ = _prepare(tmp_path, "ray", *extra)
    assert again == prepared and os.path.getmtime(os.path.join(root, "manifest.json")) == before


def test_ray_engine_reports_bad_data_and_config_in_one_line(tmp_path, ray_cluster):
    corpus = _corpus(tmp_path / "corpus", n_files=2)
    with pytest.raises(ConfigError, match="data.text_field='text' is not a field of .*part-00.jsonl"):
        _prepare(tmp_path, "ray", "data.text_field=text")
    with open(corpus / "a" / "part-00.jsonl", "ab") as f:
        f.write(b'{"content": "caf\xe9"}\n')
    with pytest.raises(ConfigError, match="part-00.jsonl is not valid UTF-8"):
        _prepare(tmp_path, "ray")
