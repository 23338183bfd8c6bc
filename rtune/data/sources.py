"""Where records come from: a hub dataset, a local directory laid out like a hub repo, JSON/JSONL/
Parquet/CSV/text files, or a corpus shipped in the package (`package:<name>`). Checked here: the path
exists, the text is UTF-8, the fields the format needs are there, and there is something to train on.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

from rtune.config import DataConfig
from rtune.data.formats import required_fields
from rtune.errors import UserError

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


def _package_dir(name: str) -> str:
    base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_data")
    path = os.path.join(base, name)
    if not os.path.isdir(path):
        found = ", ".join(sorted(os.listdir(base))) if os.path.isdir(base) else "none"
        raise UserError(f"no bundled dataset package:{name}; bundled datasets: {found}")
    return path


def _looks_local(path: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else that looks like a path is treated as one."""
    return (path.startswith(("/", ".", "~")) or path.count("/") > 1
            or os.path.splitext(path)[1].lower() in _FILE_BUILDERS or "," in path)


def _check_utf8(files: Sequence[str]) -> None:
    """Name the first line that is not UTF-8 (Arrow would otherwise fail later, far from the cause)."""
    for path in files:
        if os.path.splitext(path)[1].lower() not in (".json", ".jsonl", ".csv", ".txt"):
            continue
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise UserError(f"{path} line {number} is not valid UTF-8 (byte {err.start}): re-encode the "
                                    "file as UTF-8 (e.g. iconv -f latin1 -t utf-8) or drop that line") from None


def _local_files(path: str, data_dir: Optional[str]) -> List[str]:
    if os.path.isfile(path):
        return [path]
    root = os.path.join(path, data_dir) if data_dir else path
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


def corpus_files(cfg: DataConfig, path: str) -> List[str]:
    """The data files of `path` in the order `load_records` reads them (sorted), for engines that hand out
    one file per task: a local directory or files, a bundled corpus, or a hub dataset (`hf://` paths)."""
    key = "data.path" if path == cfg.path else "data.eval_path"
    if path.startswith("package:"):
        files = sorted(_local_files(_package_dir(path[len("package:"):]), cfg.data_dir))
    elif os.path.isdir(path):
        files = sorted(_local_files(path, cfg.data_dir))
    elif all(os.path.isfile(p) for p in path.split(",")):
        files = path.split(",")  # in the order given, as `datasets` reads data_files
    elif _looks_local(path):
        raise UserError(f"dataset path {path} does not exist: check {key}")
    else:
        from huggingface_hub import HfFileSystem

        try:
            found = HfFileSystem().find(f"datasets/{path}/{cfg.data_dir or ''}".rstrip("/"))
        except Exception:  # offline, no such repo, no access: all end the same way for the user
            raise UserError(f"cannot list dataset {path!r}: it is not a local path and the Hugging Face Hub is "
                            "unreachable or has no such dataset; use data=rust_sample offline, or "
                            "data.path=<local dir or files>") from None
        files = sorted(f"hf://{f}" for f in found)
    files = [f for f in files if os.path.splitext(f)[1].lower() in _FILE_BUILDERS]
    exts = {os.path.splitext(f)[1].lower() for f in files}
    if not files:
        raise UserError(f"no data files ({', '.join(_FILE_BUILDERS)}) in {path} (data_dir={cfg.data_dir}): "
                        f"check {key} and data.data_dir")
    if len(exts - {".json", ".jsonl"}) + bool(exts & {".json", ".jsonl"}) > 1:
        raise UserError(f"{path} mixes file types ({', '.join(sorted(exts))}): keep one kind of file per dataset")
    return files


def load_records(cfg: DataConfig, path: Optional[str] = None, min_records: int = 2):
    """The records of `path` (default `cfg.path`) as a `datasets.Dataset`, checked against `cfg.format`.

    Text: the text field must exist and empty documents are dropped. Other formats: the fields they
    need must exist (each record is checked when it is encoded).
    """
    import datasets

    datasets.disable_progress_bars()
    path = path or cfg.path
    key = "data.path" if path == cfg.path else "data.eval_path"
    try:
        if path.startswith("package:"):
            ds = datasets.load_dataset(_package_dir(path[len("package:"):]), data_dir=cfg.data_dir, split="train")
        elif os.path.isdir(path):
            _check_utf8(_local_files(path, cfg.data_dir))
            ds = datasets.load_dataset(path, data_dir=cfg.data_dir, split="train")
        elif all(os.path.isfile(p) for p in path.split(",")):
            files = path.split(",")
            _check_utf8(files)
            exts = {os.path.splitext(f)[1].lower() for f in files}
            if len(exts) != 1 or next(iter(exts)) not in _FILE_BUILDERS:
                raise UserError(f"data.path files must share one of the extensions {', '.join(_FILE_BUILDERS)}; "
                                f"got {path}")
            ds = datasets.load_dataset(_FILE_BUILDERS[exts.pop()], data_files=files, split="train")
        elif _looks_local(path):
            raise UserError(f"dataset path {path} does not exist: check {key}")
        else:
            ds = datasets.load_dataset(path, data_dir=cfg.data_dir, split="train")
    except UserError:
        raise
    except UnicodeDecodeError as err:
        raise UserError(f"dataset {path} is not valid UTF-8 ({err.reason} at byte {err.start}): "
                        "re-encode it as UTF-8") from None
    except Exception as err:  # datasets raises many types for "not there" / "no network"
        name = type(err).__name__
        first = str(err).splitlines()[0] if str(err) else name
        if "DatasetNotFound" in name or "doesn't exist on the Hub" in str(err) or "ConnectionError" in name \
                or "couldn't be found" in str(err).lower() or "offline" in str(err).lower():
            raise UserError(f"cannot load dataset {path!r}: it is not a local path and the Hugging Face Hub is "
                            f"unreachable or has no such dataset; use data=rust_sample offline, or "
                            f"data.path=<local dir or files>") from None
        if "data_dir" in str(err) or "FileNotFound" in name or "EmptyDataset" in name:
            raise UserError(f"no data files in {path} (data_dir={cfg.data_dir}): "
                            f"check {key} and data.data_dir") from None
        raise UserError(f"cannot read dataset {path}: {first}") from None
    if cfg.max_documents is not None and len(ds) > cfg.max_documents:
        ds = ds.select(range(cfg.max_documents))
    if cfg.format != "text":
        missing = required_fields(cfg.format, cfg.messages_field, ds.column_names)
        if missing:
            hint = (" (or ShareGPT 'conversations'): set data.messages_field" if cfg.format == "chat"
                    else ": pick the data.format that fits, or rename the fields")
            raise UserError(f"data.format={cfg.format} needs field(s) {', '.join(missing)}, not found in {path}; "
                            f"fields found: {', '.join(ds.column_names)}{hint}")
        if len(ds) < min_records:
            raise UserError(f"dataset {path} has {len(ds)} record(s); rtune needs at least {min_records} "
                            "(one to train on, one to validate)")
        return ds
    if cfg.text_field not in ds.column_names:
        raise UserError(f"data.text_field={cfg.text_field!r} is not a field of {path}; fields found: "
                        f"{', '.join(ds.column_names)}: {_format_hint(ds.column_names)}")
    n_records = len(ds)
    field = cfg.text_field
    ds = ds.filter(lambda text: isinstance(text, str) and bool(text.strip()), input_columns=[field])
    if len(ds) == 0:
        raise UserError(f"dataset {path} has no text in field {field!r} ({n_records} records, all empty or "
                        f"missing): check {key} and data.text_field")
    if len(ds) < min_records:
        raise UserError(f"dataset {path} has only {len(ds)} non-empty document; rtune needs at least "
                        f"{min_records} (one to train on, one to validate)")
    return ds.select_columns([field])


def _format_hint(columns: Sequence[str]) -> str:
    """What to set when a text run meets records of another format."""
    for fmt in ("preference", "prompt_completion", "instruction", "chat"):
        if not required_fields(fmt, "messages", columns):
            return f"these look like data.format={fmt} records (set it), or set data.text_field to one of them"
    return "set data.text_field to one of them"
