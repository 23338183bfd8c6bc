"""data.engine=ray: the cluster prepares the data; the driver plans and keeps counts, never the corpus.

1. The driver lists the corpus files (sorted, as `datasets` reads them) and keys the result by their names,
   sizes and modification times, the tokenizer, seq_len and the split settings.
2. Count: one Ray task per file returns its number of records and where the empty ones are (plain tasks:
   they start on Ray's prestarted workers, where a first Ray Data pipeline spends seconds starting up).
3. The driver splits documents into train / validation exactly as the datasets engine does
   (`split_documents` over the global document index), so both engines train on the same rows. A BPE
   trained on the data is trained here from the training text, streamed one file at a time.
4. Tokenize: Ray Data's pool of tokenizer actors across the cluster, one file per call, writes that file's training
   and validation tokens as flat uint32 shards under `data.cache_uri/<key>/{train,val}/`; the driver collects
   only (file, split, token count) rows and writes `manifest.json` last. The manifest is the completeness
   marker: a key without one is prepared again (shard names are deterministic, so a rerun overwrites).
5. Workers read row b of a split as tokens [b*seq_len, (b+1)*seq_len) of its shards back to back
   (`rows.TokenStream`): the datasets engine's concat packing, row for row.

Why one file per call: Ray Data's block boundaries and output file names are not deterministic, a file is.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import time
from typing import Callable, Dict, Iterator, List, Tuple

import numpy as np

from rtune.config import ConfigError, RTuneConfig, is_uri
from rtune.data.rows import TOKENS_META

MANIFEST = "manifest.json"
_ERROR = "rtune-data: "  # marks a user's data error raised inside Ray Data, so the driver can show just it
_BATCH_RECORDS = 1024  # records read and tokenized at once: bounds a tokenizer actor's memory, not the file's


class DataError(ValueError):
    def __init__(self, message: str):
        super().__init__(_ERROR + message)


# ---- reading one corpus file (inside Ray Data tasks and actors) ----------------------------------------------

def _open(path: str):
    if path.startswith("hf://"):
        from huggingface_hub import HfFileSystem

        return HfFileSystem().open(path[len("hf://"):], "rb")
    return open(path, "rb")


def _is_doc(text) -> bool:
    return isinstance(text, str) and bool(text.strip())  # load_records' rule: empty documents are dropped


def _read_texts(path: str, field: str) -> Iterator[list]:
    """The `field` of every record of one file, in order, in lists of up to _BATCH_RECORDS."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    ext = os.path.splitext(path)[1].lower()
    with _open(path) as f:
        if ext == ".parquet":
            parquet = pq.ParquetFile(f)
            if field not in parquet.schema_arrow.names:
                raise DataError(f"data.text_field={field!r} is not a field of {path}; fields found: "
                                f"{', '.join(parquet.schema_arrow.names)}: set data.text_field")
            for batch in parquet.iter_batches(batch_size=_BATCH_RECORDS, columns=[field]):
                yield batch.column(0).to_pylist()
            return
        raw = f.read()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not valid UTF-8 (byte {err.start}): re-encode the file as UTF-8") from None
    if ext == ".txt":  # the `text` builder of datasets: one record per line, field "text"
        texts = raw.decode("utf-8").splitlines()
    elif ext == ".csv":
        try:
            table = pacsv.read_csv(io.BytesIO(raw), convert_options=pacsv.ConvertOptions(include_columns=[field]))
        except (pa.ArrowInvalid, KeyError):
            raise DataError(f"data.text_field={field!r} is not a column of {path}: set data.text_field") from None
        texts = table.column(0).to_pylist()
    else:
        try:  # JSON lines; only the text field is parsed into Arrow
            options = pajson.ParseOptions(explicit_schema=pa.schema([(field, pa.string())]),
                                          unexpected_field_behavior="ignore")
            texts = pajson.read_json(io.BytesIO(raw), parse_options=options).column(0).to_pylist()
        except pa.ArrowInvalid:  # a JSON array of records, or a line that is not an object
            texts = _json_array_texts(raw, path, field)
        if texts and all(t is None for t in texts):
            raise DataError(f"data.text_field={field!r} is not a field of {path}: set data.text_field to the "
                            "field that holds the text")
    for start in range(0, len(texts), _BATCH_RECORDS):
        yield texts[start:start + _BATCH_RECORDS]


def _json_array_texts(raw: bytes, path: str, field: str) -> list:
    try:
        records = json.loads(raw)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno} is not valid JSON: {err.msg}: fix or drop that record") from None
    if not isinstance(records, list):
        raise DataError(f"{path} holds neither JSON lines nor a JSON array of records")
    return [r.get(field) if isinstance(r, dict) else None for r in records]


def _count_file(row: Dict, field: str) -> Dict:
    """Records in one file and the positions of the empty ones (what the driver needs to split)."""
    records, empty = 0, []
    for texts in _read_texts(row["path"], field):
        empty += [records + j for j, text in enumerate(texts) if not _is_doc(text)]
        records += len(texts)
    return {"index": row["index"], "records": records, "empty": json.dumps(empty)}


def _docs_of(path: str, field: str, keep_docs: int) -> Iterator[List[str]]:
    """The first keep_docs non-empty documents of one file, in batches."""
    seen = 0
    for texts in _read_texts(path, field):
        docs = [t for t in texts if _is_doc(t)][:max(0, keep_docs - seen)]
        seen += len(docs)
        if docs:
            yield docs
        if seen >= keep_docs:
            return


def _train_texts(path: str, field: str, keep_docs: int, val: List[int]) -> List[str]:
    """One file's training documents (for training a BPE on the driver, one file in memory at a time)."""
    val_set, out, position = set(val), [], 0
    for docs in _docs_of(path, field, keep_docs):
        out += [d for j, d in enumerate(docs, position) if j not in val_set]
        position += len(docs)
    return out


# ---- storage: a local directory or a URI -------------------------------------------------------------------

def _fs(root: str):
    """(pyarrow filesystem, path inside it) for a local directory or a storage URI."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(root) if is_uri(root) else (fs.LocalFileSystem(), root)


def _exists(root: str, name: str) -> bool:
    from pyarrow import fs as pafs

    filesystem, path = _fs(root)
    return filesystem.get_file_info(f"{path}/{name}").type != pafs.FileType.NotFound


def _read_json(root: str, name: str) -> dict:
    filesystem, path = _fs(root)
    with filesystem.open_input_stream(f"{path}/{name}") as f:
        return json.loads(f.read())


def _write_json(root: str, name: str, value: dict) -> None:
    filesystem, path = _fs(root)
    filesystem.create_dir(os.path.dirname(f"{path}/{name}"), recursive=True)
    with filesystem.open_output_stream(f"{path}/{name}") as f:
        f.write(json.dumps(value, indent=1).encode())


def _download(root: str, local: str) -> str:
    """A local copy of the directory `root` (a URI), made once per node and swapped in atomically."""
    from pyarrow import fs as pafs

    if os.path.isdir(local):
        return local
    filesystem, path = _fs(root)
    tmp = f"{local}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    pafs.copy_files(path, tmp, source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())
    try:
        os.replace(tmp, local)
    except OSError:  # another worker on this node finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return local


def _node_cache(cfg: RTuneConfig) -> str:
    """This node's own cache: RTUNE_CACHE_DIR where the node was started with one, else data.cache_dir."""
    return os.path.abspath(os.path.expanduser(os.environ.get("RTUNE_CACHE_DIR") or cfg.data.cache_dir))


# ---- the tokenizer actor -----------------------------------------------------------------------------------

class TokenizeFiles:
    """Ray Data actor: tokenizes whole files (one per call) and writes their train / val token shards.

    Its settings are class attributes of a subclass made per run (`_actor_class`): constructor arguments would
    travel through the object store, which Ray warns about for restartable actors. Only the Rust tokenizer
    is loaded (not transformers): an actor starts in a fraction of a second.
    """

    settings: Dict = {}

    def __init__(self):
        from tokenizers import Tokenizer

        root, cache_dir = self.settings["root"], self.settings["cache_dir"]
        tokenizer_dir = f"{root}/tokenizer"
        if is_uri(root):
            tokenizer_dir = _download(tokenizer_dir, os.path.join(cache_dir, "tokenizers", os.path.basename(root)))
        self.backend = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
        self.eos, self.root, self.field = self.settings["eos_token_id"], root, self.settings["field"]

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, list]:
        import ray

        filesystem, path = _fs(self.root)
        index, val = int(batch["index"][0]), set(json.loads(batch["val"][0]))
        streams, tokens, documents, position = {}, {"train": 0, "val": 0}, {"train": 0, "val": 0}, 0
        try:
            for docs in _docs_of(str(batch["path"][0]), self.field, int(batch["keep_docs"][0])):
                encoded = self.backend.encode_batch_fast(docs, add_special_tokens=False)  # no offsets: ~15% faster
                chunks: Dict[str, list] = {"train": [], "val": []}
                for j, e in enumerate(encoded, position):
                    split = "val" if j in val else "train"
                    chunks[split].append(np.asarray(e.ids + [self.eos], dtype=np.uint32))
                position += len(docs)
                for split, arrays in chunks.items():
                    if not arrays:
                        continue
                    if split not in streams:
                        filesystem.create_dir(f"{path}/{split}", recursive=True)
                        streams[split] = filesystem.open_output_stream(f"{path}/{split}/tok-{index:06d}.bin")
                    flat = np.concatenate(arrays)
                    streams[split].write(flat.tobytes())
                    tokens[split] += len(flat)
                    documents[split] += len(arrays)
        finally:
            for stream in streams.values():
                stream.close()
        node = ray.get_runtime_context().get_node_id()
        return {"index": [index, index], "split": ["train", "val"], "tokens": [tokens["train"], tokens["val"]],
                "documents": [documents["train"], documents["val"]], "node": [node, node]}


# ---- the driver ----------------------------------------------------------------------------------------------

def _collect(run: Callable[[], list]) -> list:
    """Run a Ray Data pipeline (`take_all`) or a `ray.get`; a data error raised in a task becomes its one line
    (Ray wraps the task's exception; only rtune's line is kept)."""
    try:
        return run()
    except Exception as err:
        found = re.search(re.escape(_ERROR) + r"(.+)", str(err))
        if found:
            raise ConfigError(found.group(1).strip()) from None
        raise


def _quiet_data_context():
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO / WARNING lines would bury rtune's
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.wait_for_min_actors_s = 600  # a pool that cannot start fails instead of waiting forever
    return ctx


def _stat(path: str) -> Tuple[str, int, str]:
    if path.startswith("hf://"):
        from huggingface_hub import HfFileSystem

        info = HfFileSystem().info(path[len("hf://"):])
        return path, int(info.get("size", 0)), str(info.get("blob_id") or info.get("last_commit"))
    st = os.stat(path)
    return path, st.st_size, str(st.st_mtime_ns)


def _plan(cfg: RTuneConfig, files: List[str], n_train_files: int, counts: List[dict]) -> List[dict]:
    """Per file: how many of its documents to keep and which of them (by position) are validation."""
    from rtune.data.pipeline import split_documents

    d = cfg.data
    sources = [(d.path, 0, n_train_files)] + ([(d.eval_path, n_train_files, len(files))] if d.eval_path else [])
    keep = [0] * len(files)
    for path, lo, hi in sources:  # max_documents caps records before empties are dropped (as load_records)
        left = d.max_documents if d.max_documents is not None else float("inf")
        for i in range(lo, hi):
            records, empty = counts[i]["records"], json.loads(counts[i]["empty"])
            kept_records = int(min(records, left))
            keep[i] = kept_records - sum(1 for e in empty if e < kept_records)
            left -= kept_records
        total = sum(keep[lo:hi])
        needed = 1 if (d.eval_path and lo == 0) or lo > 0 else 2
        if total == 0:
            raise ConfigError(f"dataset {path} has no text in field {d.text_field!r}: check data.path and "
                              "data.text_field")
        if total < needed:
            raise ConfigError(f"dataset {path} has only {total} non-empty document; rtune needs at least {needed} "
                              "(one to train on, one to validate)")
    n_train_docs = sum(keep[:n_train_files])
    if d.eval_path:
        val_global = np.zeros(0, dtype=np.int64)
    else:
        _, val_global = split_documents(n_train_docs, d.val_fraction, cfg.seed)
    plan, first = [], 0
    for i, path in enumerate(files):
        if i < n_train_files:
            lo = np.searchsorted(val_global, first)
            hi = np.searchsorted(val_global, first + keep[i])
            val = (val_global[lo:hi] - first).tolist()
            first += keep[i]
        else:
            val = list(range(keep[i]))  # every eval_path document validates
        plan.append({"index": i, "path": path, "keep_docs": keep[i], "val": json.dumps(val)})
    return plan


def _tokenizer(cfg: RTuneConfig, plan: List[dict], n_train_files: int, key: str):
    """The model's tokenizer, or a BPE trained on the training documents streamed from the cluster."""
    import ray

    from rtune.data.pipeline import get_tokenizer
    from rtune.model import load_tokenizer_from, train_bpe_tokenizer

    m, d = cfg.model, cfg.data
    if m.tokenizer or m.name_or_path:
        return get_tokenizer(cfg, None, np.zeros(0, dtype=np.int64), "")
    out_dir = os.path.join(d.cache_dir, "tokenizers", f"ray-{key}")
    if os.path.isdir(out_dir):
        return load_tokenizer_from(out_dir, trust_remote_code=False)
    read = ray.remote(num_cpus=1)(_train_texts)

    def texts():
        jobs = [p for p in plan[:n_train_files] if p["keep_docs"]]
        pending = [read.remote(p["path"], d.text_field, p["keep_docs"], json.loads(p["val"])) for p in jobs[:2]]
        for i in range(len(jobs)):  # two files in flight: the next is read while this one trains the BPE
            chunk = _collect(lambda: ray.get(pending.pop(0)))
            if i + 2 < len(jobs):
                p = jobs[i + 2]
                pending.append(read.remote(p["path"], d.text_field, p["keep_docs"], json.loads(p["val"])))
            yield from chunk

    return train_bpe_tokenizer(texts(), m.tokenizer_vocab_size, out_dir)


def _prepared(root: str, manifest: dict):
    from rtune.data.pipeline import PreparedData

    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    return PreparedData(f"{root}/train", f"{root}/val", f"{root}/tokenizer", train["documents"], val["documents"],
                        train["tokens"], val["tokens"], train["rows"], val["rows"], manifest["seq_len"],
                        packing="concat", train_target_tokens=train["tokens"], val_target_tokens=val["tokens"])


def prepare_with_ray(cfg: RTuneConfig):
    """Prepare the data on the Ray cluster the driver is connected to; returns (PreparedData, tokenizer)."""
    import ray
    import ray.data

    from rtune.data.pipeline import _key
    from rtune.data.sources import corpus_files
    from rtune.model import tokenizer_fingerprint

    d = cfg.data
    if not ray.is_initialized():
        raise RuntimeError("data.engine=ray needs a connected Ray cluster (the driver starts one first)")
    _quiet_data_context()
    train_files = corpus_files(d, d.path)
    files = train_files + (corpus_files(d, d.eval_path) if d.eval_path else [])
    items = [{"index": i, "path": p} for i, p in enumerate(files)]
    started = time.perf_counter()
    # Plain Ray tasks (Ray Data's first pipeline costs seconds of start-up; these take prestarted workers).
    count = ray.remote(num_cpus=1)(_count_file)
    counts = _collect(lambda: ray.get([count.remote(item, d.text_field) for item in items]))
    plan = _plan(cfg, files, len(train_files), counts)
    source_key = _key("ray-v1", *map(_stat, files), len(train_files), d.text_field, d.val_fraction, cfg.seed,
                      d.max_documents)
    tokenizer = _tokenizer(cfg, plan, len(train_files), source_key)
    key = _key(source_key, tokenizer_fingerprint(tokenizer), d.seq_len)
    root = f"{d.cache_uri.rstrip('/')}/{key}"
    if _exists(root, MANIFEST):  # prepared before, by this or any other run on this storage
        print(f"[rtune] data.engine=ray: prepared data found at {root}", flush=True)
        return _prepared(root, _read_json(root, MANIFEST)), tokenizer

    _, path = _fs(root)
    if is_uri(root):
        local = os.path.join(d.cache_dir, "tokenizers", f"upload-{key}")
        tokenizer.save_pretrained(local)
        from pyarrow import fs as pafs

        filesystem, _ = _fs(root)
        filesystem.create_dir(f"{path}/tokenizer", recursive=True)
        pafs.copy_files(local, f"{path}/tokenizer", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=filesystem)
    else:
        tokenizer.save_pretrained(f"{path}/tokenizer")
    count_s = time.perf_counter() - started
    actors = max(1, min(len(files), int(ray.available_resources().get("CPU", 1))))
    started = time.perf_counter()
    written = _collect(ray.data.from_items(plan, override_num_blocks=len(plan)).map_batches(
        type("TokenizeFiles", (TokenizeFiles,), {"settings": {
            "root": root, "field": d.text_field, "cache_dir": d.cache_dir, "eos_token_id": tokenizer.eos_token_id}}),
        batch_size=1, num_cpus=1,  # one file at a time per actor: the files spread over the nodes
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1)).take_all)
    manifest = {"version": 1, "key": key, "seq_len": d.seq_len, "files": len(files), "splits": {},
                "files_per_node": {}, "tokenizer_actors": actors, "count_s": round(count_s, 1),
                "tokenize_s": round(time.perf_counter() - started, 1)}
    for split in ("train", "val"):
        shards = sorted((r["index"], r["tokens"], r["documents"]) for r in written if r["split"] == split)
        tokens = sum(t for _, t, _ in shards)
        _write_json(root, f"{split}/{TOKENS_META}", {"seq_len": d.seq_len, "files": [
            [f"tok-{i:06d}.bin", t] for i, t, _ in shards if t]})
        manifest["splits"][split] = {"tokens": tokens, "documents": sum(n for _, _, n in shards),
                                     "rows": max(1, -(-tokens // d.seq_len))}
    for r in written:
        if r["split"] == "train":
            manifest["files_per_node"][r["node"]] = manifest["files_per_node"].get(r["node"], 0) + 1
    _write_json(root, MANIFEST, manifest)  # last: the shards are complete once this exists
    print(f"[rtune] data.engine=ray: {len(files)} file(s) tokenized by {actors} actor(s) on "
          f"{len(manifest['files_per_node'])} node(s) into {root} (counted in {count_s:.1f} s, tokenized in "
          f"{manifest['tokenize_s']} s)", flush=True)
    return _prepared(root, manifest), tokenizer


def localize(prepared, cfg: RTuneConfig):
    """This node's view of the ray engine's data: the shared directory itself, or a node-local copy of a URI."""
    from dataclasses import replace

    root = os.path.dirname(prepared.train_path)
    if is_uri(root):
        local = _download(root, os.path.join(_node_cache(cfg), "shards", os.path.basename(root)))
    elif os.path.exists(os.path.join(root, MANIFEST)):
        local = root
    else:
        import socket

        raise ConfigError(f"the prepared data at {root} is not visible on node {socket.gethostname()}: set "
                          "data.cache_uri to a directory every node mounts, or a storage URI (s3://, gs://)")
    return replace(prepared, train_path=f"{local}/train", val_path=f"{local}/val", tokenizer_dir=f"{local}/tokenizer")
