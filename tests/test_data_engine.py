"""data.engine=ray: Ray Data tokenizes the corpus files on the cluster and writes token shards; the rows
workers read equal the datasets engine's, row for row (real Ray Data on the session's local cluster)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from rtune.driver.preflight import finalize
from rtune.errors import UserError
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


def _prepare(tmp_path, engine, *extra, seq_len=32):
    from rtune.data.pipeline import prepare_data

    cfg = finalize(compose(f"data.path={tmp_path / 'corpus'}", "data.data_dir=null", f"data.seq_len={seq_len}",
                           "model.tokenizer_vocab_size=300", f"data.engine={engine}",
                           f"storage_path={tmp_path / 'runs'}", "data.val_fraction=0.2", *extra))
    return prepare_data(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("n_files, extra", [(5, ()), (5, ("data.max_documents=40",)), (2, ())],
                         ids=["all", "max_documents", "files_cut_into_parts"])
def test_ray_engine_rows_equal_the_datasets_engine(tmp_path, ray_cluster, n_files, extra):
    _corpus(tmp_path / "corpus", n_files=n_files)
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
    # Fewer than 4 files per actor: files are cut into parts so that no actor idles at the end (2 files are cut
    # whatever the actor count), and the rows above are still equal.
    parts = manifest["parts"]
    assert manifest["files"] == n_files and parts == sum(manifest["parts_per_node"].values()) >= n_files
    assert n_files > 2 or parts > n_files
    # Usage stats are off on rtune's local clusters: Ray Data started no actor to buffer them.
    from ray.util.state import list_actors

    assert not list_actors(filters=[("class_name", "=", "_UsageCollectionActor")])
    # Prepared once: a second run finds the manifest and tokenizes nothing.
    before = os.path.getmtime(os.path.join(root, "manifest.json"))
    again, _ = _prepare(tmp_path, "ray", *extra)
    assert again == prepared and os.path.getmtime(os.path.join(root, "manifest.json")) == before


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Ray ships jemalloc in its Linux wheels")
def test_tokenizer_actors_run_with_jemalloc(ray_cluster, monkeypatch):
    """The runtime env the tokenizer actors get preloads Ray's jemalloc into their worker process (under glibc's
    malloc the Rust tokenizer slowed by a third after a few files); RTUNE_JEMALLOC=0 turns it off."""
    import ray

    from rtune.data.ray_engine import _actor_runtime_env

    @ray.remote(num_cpus=0)
    def allocators():
        return [line.split()[-1] for line in open("/proc/self/maps") if "jemalloc" in line]

    runtime_env = _actor_runtime_env()
    assert any(p.endswith("libjemalloc.so") for p in ray.get(allocators.options(runtime_env=runtime_env).remote()))
    monkeypatch.setenv("RTUNE_JEMALLOC", "0")
    assert _actor_runtime_env() == {}


@pytest.mark.slow
def test_ray_engine_reports_bad_data_and_config_in_one_line(tmp_path, ray_cluster):
    corpus = _corpus(tmp_path / "corpus", n_files=2)
    with pytest.raises(UserError, match="data.text_field=.text. is not a field of .*part-0[01].jsonl"):
        _prepare(tmp_path, "ray", "data.text_field=text")
    with open(corpus / "a" / "part-00.jsonl", "ab") as f:
        f.write(b'{"content": "caf\xe9"}\n')
    with pytest.raises(UserError, match="part-00.jsonl is not valid UTF-8"):
        _prepare(tmp_path, "ray")


@pytest.mark.slow
def test_a_malformed_record_comes_back_from_a_tokenizer_actor_as_one_line(tmp_path, ray_cluster):
    """Raised in a Ray Data actor, the record's UserError reaches the driver by its type, with its line alone."""
    _files_of(tmp_path / "corpus", "rust_chat", 30, ['{"messages": "not a list of messages"}'])
    with pytest.raises(UserError) as err:
        _prepare(tmp_path, "ray", "data=rust_chat", seq_len=256)
    assert str(err.value).startswith(f"{tmp_path / 'corpus'}/part-0.jsonl record 10: field 'messages' must be"), err
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


def _row_samples(path):
    """Every row of a packed split as its list of samples (ids, labels): cut where position ids restart."""
    from rtune.data.packing import PAD
    from rtune.data.rows import PackedRows

    rows, found = PackedRows(path, pad_token_id=0), []
    for i in range(len(rows)):
        ids, labels = np.asarray(rows.arrays["input_ids"][i]), np.asarray(rows.arrays["labels"][i])
        positions = np.asarray(rows.arrays["position_ids"][i])
        starts = [j for j in range(len(ids)) if positions[j] == 0 and ids[j] != PAD] + [int((ids != PAD).sum())]
        found.append([(tuple(ids[a:b]), tuple(labels[a:b])) for a, b in zip(starts, starts[1:])])
    return found


def _samples(path):
    """Every sample of a packed split, sorted."""
    return sorted(sample for row in _row_samples(path) for sample in row)


def _pairs(path):
    """Every (chosen, rejected) pair of a packed preference split, sorted: each pair whole in one row, its two
    samples next to each other."""
    pairs = []
    for i, row in enumerate(_row_samples(path)):
        assert len(row) % 2 == 0, f"row {i} splits a pair"
        pairs += [(row[k], row[k + 1]) for k in range(0, len(row), 2)]
    return sorted(pairs)


def _files_of(corpus, bundled: str, n_lines: int, extra_lines=()):
    """The first n_lines of a bundled set (and extra_lines) dealt into 3 files."""
    corpus.mkdir()
    lines = (Path(__file__).parent.parent / f"rtune/sample_data/{bundled}/data.jsonl").read_text().splitlines()
    lines = lines[:n_lines] + list(extra_lines)
    for i in range(3):
        (corpus / f"part-{i}.jsonl").write_text("\n".join(lines[i::3]) + "\n")
    return lines


def _same_on_both_engines(tmp_path, extra, units_of, fields):
    """Prepare with both engines; every split's units (samples, pairs) and the counts in fields are equal."""
    reference, _ = _prepare(tmp_path, "datasets", *extra, seq_len=256)
    prepared, _ = _prepare(tmp_path, "ray", *extra, seq_len=256)
    for split in ("train", "val"):
        assert units_of(getattr(prepared, f"{split}_path")) == units_of(getattr(reference, f"{split}_path")), split
    for field in ("train_documents", "val_documents", "train_tokens", "train_target_tokens", "val_target_tokens",
                  "truncated", "dropped_too_long", "packing", *fields):
        assert getattr(prepared, field) == getattr(reference, field), field
    return reference, prepared


def _train_on_ray_engine(tmp_path, corpus, run_name, *extra):
    """A 2-step, 1-worker run on data the ray engine prepares."""
    from rtune.driver.launch import train

    return train(finalize(compose(f"data.path={corpus}", "data.data_dir=null", "data.engine=ray", *extra,
                                  "data.seq_len=256", "model.tokenizer_vocab_size=300", "data.val_fraction=0.2",
                                  f"storage_path={tmp_path / 'runs'}", f"run_name={run_name}", "num_workers=1",
                                  "trainer.max_steps=2", "trainer.micro_batch_size=2", "model.from_config.n_layer=1",
                                  "model.from_config.n_embd=32", "model.from_config.n_head=2")))


@pytest.mark.slow
def test_ray_engine_packs_chat_files_with_the_same_samples_and_trains(tmp_path, ray_cluster):
    """Chat records, isolated packing: the ray engine packs file by file, so its rows differ from the datasets
    engine's global packing, but they hold exactly the same samples (tokens and loss masks); a run trains on them."""
    corpus = tmp_path / "corpus"
    _files_of(corpus, "rust_chat", 240)
    chat = ["data=rust_chat", "data.truncation=truncate"]
    reference, prepared = _same_on_both_engines(tmp_path, chat, _samples, ["end_of_turn"])
    assert prepared.train_blocks >= reference.train_blocks  # packed per file: never tighter than globally
    summary = _train_on_ray_engine(tmp_path, corpus, "chat", *chat)
    assert summary["final_step"] == 2 and summary["eval_loss"] is not None


@pytest.mark.slow
def test_ray_engine_packs_preference_pairs_like_the_datasets_engine_and_trains(tmp_path, ray_cluster):
    """Preference records in 3 files: exactly the datasets engine's pairs (chosen and rejected token ids and
    reply masks, each pair in one row), the same counts (identical-reply pairs skipped, too long truncated),
    and an ORPO run trains on them."""
    corpus = tmp_path / "corpus"
    first = json.loads((Path(__file__).parent.parent / "rtune/sample_data/rust_preference/data.jsonl")
                       .read_text().splitlines()[0])
    identical = json.dumps({**first, "rejected": first["chosen"]})  # identical replies: skipped by both engines
    _files_of(corpus, "rust_preference", 150, [identical])
    pref = ["data=rust_preference", "objective=orpo", "data.truncation=truncate"]
    reference, _ = _same_on_both_engines(tmp_path, pref, _pairs, ["skipped_identical"])
    assert reference.skipped_identical == 1 and reference.truncated > 0
    summary = _train_on_ray_engine(tmp_path, corpus, "pref", *pref)
    assert summary["final_step"] == 2 and summary.get("eval_reward_accuracy") is not None
