"""What runs inside Ray tasks and actors for `data.engine=ray` (driver: `ray_engine.py`): reading one corpus
file, counting its records, tokenizing it into token shards (raw text, concat packing) or packing it into rows
(every other format and packing), and the storage helpers both sides share (a local directory or a URI).
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from typing import Dict, Iterator, List

import numpy as np

from rtune.config import from_dict, is_uri
from rtune.data.formats import record_texts, required_fields
from rtune.data.prepared import encode_records, pack_and_save
from rtune.data.rows import save_rows
from rtune.errors import UserError

_BATCH_RECORDS = 1024  # records read and tokenized at once: bounds a tokenizer actor's memory, not the file's


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
                raise UserError(f"data.text_field={field!r} is not a field of {path}; fields found: "
                                f"{', '.join(parquet.schema_arrow.names)}: set data.text_field")
            for batch in parquet.iter_batches(batch_size=_BATCH_RECORDS, columns=[field]):
                yield batch.column(0).to_pylist()
            return
        raw = f.read()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not valid UTF-8 (byte {err.start}): re-encode the file as UTF-8") from None
    if ext == ".txt":  # the `text` builder of datasets: one record per line, field "text"
        texts = raw.decode("utf-8").splitlines()
    elif ext == ".csv":
        try:
            table = pacsv.read_csv(io.BytesIO(raw), convert_options=pacsv.ConvertOptions(include_columns=[field]))
        except (pa.ArrowInvalid, KeyError):
            raise UserError(f"data.text_field={field!r} is not a column of {path}: set data.text_field") from None
        texts = table.column(0).to_pylist()
    else:
        try:  # JSON lines; only the text field is parsed into Arrow
            options = pajson.ParseOptions(explicit_schema=pa.schema([(field, pa.string())]),
                                          unexpected_field_behavior="ignore")
            texts = pajson.read_json(io.BytesIO(raw), parse_options=options).column(0).to_pylist()
        except pa.ArrowInvalid:  # a JSON array of records, or a line that is not an object
            texts = _json_array_texts(raw, path, field)
        if texts and all(t is None for t in texts):
            raise UserError(f"data.text_field={field!r} is not a field of {path}: set data.text_field to the "
                            "field that holds the text")
    for start in range(0, len(texts), _BATCH_RECORDS):
        yield texts[start:start + _BATCH_RECORDS]


def _read_records(path: str) -> Iterator[List[dict]]:
    """Every record of one file (formats other than text), in order, in lists of up to _BATCH_RECORDS."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    ext = os.path.splitext(path)[1].lower()
    with _open(path) as f:
        if ext == ".parquet":
            for batch in pq.ParquetFile(f).iter_batches(batch_size=_BATCH_RECORDS):
                yield batch.to_pylist()
            return
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not valid UTF-8 (byte {err.start}): re-encode the file as UTF-8") from None
    if ext == ".csv":
        records = pacsv.read_csv(io.BytesIO(raw)).to_pylist()
    elif ext == ".txt":
        records = [{"text": line} for line in text.splitlines()]
    elif text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise UserError(f"{path} line {number} is not valid JSON ({err.msg}): fix or drop that "
                                    "line") from None
    for start in range(0, len(records), _BATCH_RECORDS):
        yield records[start:start + _BATCH_RECORDS]


def _json_array_texts(raw: bytes, path: str, field: str) -> list:
    try:
        records = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UserError(f"{path} line {err.lineno} is not valid JSON: {err.msg}: fix or drop that record") from None
    if not isinstance(records, list):
        raise UserError(f"{path} holds neither JSON lines nor a JSON array of records")
    return [r.get(field) if isinstance(r, dict) else None for r in records]


def count_file(row: Dict, data: Dict) -> Dict:
    """Records in one file and the positions of the empty text documents (what the driver needs to split);
    other formats: checks that the first record has the fields the format needs."""
    records, empty = 0, []
    if data["format"] == "text":
        for texts in _read_texts(row["path"], data["text_field"]):
            empty += [records + j for j, text in enumerate(texts) if not _is_doc(text)]
            records += len(texts)
        return {"index": row["index"], "records": records, "empty": json.dumps(empty)}
    for batch in _read_records(row["path"]):
        if records == 0 and batch:
            fields = list(batch[0]) if isinstance(batch[0], dict) else []
            missing = required_fields(data["format"], data["messages_field"], fields)
            if missing:
                raise UserError(f"data.format={data['format']} needs field(s) {', '.join(missing)}, not found in "
                                f"{row['path']}; fields found: {', '.join(fields)}: pick the data.format that fits, "
                                "or rename the fields")
        records += len(batch)
    return {"index": row["index"], "records": records, "empty": "[]"}


def _records_of(path: str, data: Dict, keep: int, skip: int = 0) -> Iterator[List[dict]]:
    """Records [skip, keep) a split can draw from (text: non-empty documents), in batches."""
    if data["format"] == "text":
        for docs in docs_of(path, data["text_field"], keep, skip):
            yield [{data["text_field"]: doc} for doc in docs]
        return
    yield from _window(_read_records(path), keep, skip)


def docs_of(path: str, field: str, keep_docs: int, skip_docs: int = 0) -> Iterator[List[str]]:
    """Non-empty documents [skip_docs, keep_docs) of one file, in batches."""
    yield from _window(([t for t in texts if _is_doc(t)] for texts in _read_texts(path, field)), keep_docs, skip_docs)


def _window(batches: Iterator[list], stop: int, start: int = 0) -> Iterator[list]:
    """Items [start, stop) of a stream of batches, in batches (the rest is not read)."""
    seen = 0
    for batch in batches:
        part = batch[max(0, start - seen):max(0, stop - seen)]
        seen += len(batch)
        if part:
            yield part
        if seen >= stop:
            return


def train_texts(path: str, data: Dict, keep_docs: int, val: List[int]) -> List[str]:
    """The text of one file's training records, in order, a batch of records at a time."""
    val_set, position = set(val), 0
    for records in _records_of(path, data, keep_docs):
        for j, record in enumerate(records, position):
            if j not in val_set:
                yield from record_texts(record, data["format"], data["text_field"], data["messages_field"])
        position += len(records)


def train_bpe(jobs: List[Dict], data: Dict, vocab_size: int) -> Dict[str, bytes]:
    """A Ray task: train the byte-level BPE on the training documents of `jobs` (files with the documents to keep
    and those that validate), streamed from storage here, and return the tokenizer's files. Off the driver, so
    the driver's memory does not grow with the corpus (the trainer's counts live in this task's process)."""
    from rtune.model import train_bpe_tokenizer  # transformers: only this task needs it (not the tokenizer actors)

    texts = (text for job in jobs for text in train_texts(job["path"], data, job["keep_docs"], json.loads(job["val"])))
    with tempfile.TemporaryDirectory(prefix="rtune-bpe-") as tmp:
        train_bpe_tokenizer(texts, vocab_size, os.path.join(tmp, "tokenizer"))
        folder = os.path.join(tmp, "tokenizer")
        return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


# ---- storage: a local directory or a URI -------------------------------------------------------------------

def filesystem_of(root: str):
    """(pyarrow filesystem, path inside it) for a local directory or a storage URI."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(root) if is_uri(root) else (fs.LocalFileSystem(), root)


def download_dir(root: str, local: str) -> str:
    """A local copy of the directory `root` (a URI), made once per node and swapped in atomically."""
    from pyarrow import fs as pafs

    if os.path.isdir(local):
        return local
    filesystem, path = filesystem_of(root)
    tmp = f"{local}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    pafs.copy_files(path, tmp, source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())
    try:
        os.replace(tmp, local)
    except OSError:  # another worker on this node finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return local


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
            tokenizer_dir = download_dir(tokenizer_dir, os.path.join(cache_dir, "tokenizers", os.path.basename(root)))
        self.backend = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
        self.eos, self.root, self.field = self.settings["eos_token_id"], root, self.settings["field"]

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, list]:

        filesystem, path = filesystem_of(self.root)
        index, val, skip = int(batch["index"][0]), set(json.loads(batch["val"][0])), int(batch["skip_docs"][0])
        streams, tokens, documents, position = {}, {"train": 0, "val": 0}, {"train": 0, "val": 0}, skip
        try:
            for docs in docs_of(str(batch["path"][0]), self.field, int(batch["keep_docs"][0]), skip):
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
        return _result(index, {split: {"tokens": tokens[split], "documents": documents[split],
                                       "target_tokens": tokens[split]} for split in ("train", "val")})


def _result(index: int, per_split: Dict[str, Dict[str, int]]) -> Dict[str, list]:
    """An actor's output batch: one row per split with its counts, and the node that did the work."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    names = ("tokens", "documents", "target_tokens", "rows", "skipped_no_reply", "dropped_too_long", "truncated",
             "skipped_identical")
    out: Dict[str, list] = {"index": [], "split": [], "node": [], **{k: [] for k in names}}
    for split, counts in per_split.items():
        out["index"].append(index)
        out["split"].append(split)
        out["node"].append(node)
        for k in names:
            out[k].append(int(counts.get(k, 0)))
    return out


class PackFiles:
    """Ray Data actor for every other format and packing: encodes one file's records (chat template, loss
    masks), drops or truncates what is too long, packs each split's samples into rows (`packing.py`) and
    writes them as a packed directory (`rows.py`) per file and split. Rows are packed within a file: the
    same samples as the datasets engine, placed in rows file by file (a deterministic order)."""

    settings: Dict = {}

    def __init__(self):
        from rtune.model import load_tokenizer_from  # transformers: only this actor needs it

        self.cfg, self.root = from_dict(self.settings["cfg"]), self.settings["root"]
        tokenizer_dir = f"{self.root}/tokenizer"
        if is_uri(self.root):
            tokenizer_dir = download_dir(tokenizer_dir, os.path.join(self.settings["cache_dir"], "tokenizers",
                                                                  os.path.basename(self.root)))
        self.tokenizer = load_tokenizer_from(tokenizer_dir, trust_remote_code=False)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, list]:
        d = self.cfg.data
        index, path, val = int(batch["index"][0]), str(batch["path"][0]), set(json.loads(batch["val"][0]))
        keep, skip = int(batch["keep_docs"][0]), int(batch["skip_docs"][0])
        columns: Dict[str, Dict[str, list]] = {"train": {}, "val": {}}
        position = skip
        for records in _records_of(path, asdict(d), keep, skip):
            where = [f"{path} record {j}" for j in range(position, position + len(records))]
            encoded = encode_records(records, where, self.tokenizer, d)
            for name, values in encoded.items():
                for j, value in enumerate(values, position):
                    columns["val" if j in val else "train"].setdefault(name, []).append(value)
            position += len(records)
        counts = {}
        for split, encoded in columns.items():
            save = functools.partial(self._save, f"{split}/rows-{index:06d}")
            meta, stats = pack_and_save(encoded, self.cfg, save) if encoded else (None, {})
            counts[split] = {**stats, "documents": 0}
            if meta is not None:
                counts[split] = {**stats, "tokens": meta["tokens"], "target_tokens": meta["target_tokens"],
                                 "rows": meta["rows"], "documents": meta["samples"]}
        return _result(index, counts)

    def _save(self, name: str, rows, stats: Dict[str, int]) -> Dict[str, int]:
        from pyarrow import fs as pafs

        filesystem, path = filesystem_of(self.root)
        if not is_uri(self.root):
            os.makedirs(os.path.dirname(f"{path}/{name}"), exist_ok=True)
            return save_rows(f"{path}/{name}", rows, stats)
        local = tempfile.mkdtemp(prefix="rtune-rows-")
        try:
            meta = save_rows(f"{local}/rows", rows, stats)
            filesystem.create_dir(f"{path}/{name}", recursive=True)
            pafs.copy_files(f"{local}/rows", f"{path}/{name}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=filesystem)
            return meta
        finally:
            shutil.rmtree(local, ignore_errors=True)
