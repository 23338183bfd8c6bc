"""Documents -> tokens -> packed blocks, cached on disk so workers and re-runs do not redo it.

The pipeline, run once on the driver (and again, hitting the cache, on any node that lacks it):

1. load the documents (hub id, local directory laid out like the hub repo, JSON/JSONL/Parquet files,
   or a corpus shipped in the package) and check the text field;
2. split by *document* into train and validation, so no validation text is ever trained on;
3. tokenize with `datasets.map`, cached under `cache_dir` by the data's and the tokenizer's
   fingerprints;
4. pack: concatenate each split's documents with EOS after each one and cut the stream into blocks
   of `seq_len` tokens. Only the very last block can be short; it is padded and its padding is
   masked out of the loss, so every token is used exactly once and padding waste is < 1 block.

Blocks are saved as int32 `.npy` files (padding = -1) that workers memory-map.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence

import numpy as np

from rtune.config import ConfigError, DataConfig, RTuneConfig

PAD = -1  # marks padding in packed blocks; never a real token id
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


@dataclass
class PreparedData:
    """Where the packed blocks are and what they hold."""

    train_path: str
    val_path: str
    tokenizer_dir: str
    train_documents: int
    val_documents: int
    train_tokens: int
    val_tokens: int
    train_blocks: int
    val_blocks: int
    seq_len: int

    @property
    def train_fill(self) -> float:
        """Non-padding share of the training blocks (packing efficiency)."""
        return self.train_tokens / (self.train_blocks * self.seq_len)

    def to_dict(self) -> dict:
        return asdict(self)


def _key(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def _package_dir(name: str) -> str:
    base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_data")
    path = os.path.join(base, name)
    if not os.path.isdir(path):
        found = ", ".join(sorted(os.listdir(base))) if os.path.isdir(base) else "none"
        raise ConfigError(f"no bundled dataset package:{name}; bundled datasets: {found}")
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
                    raise ConfigError(f"{path} line {number} is not valid UTF-8 (byte {err.start}): re-encode the "
                                      "file as UTF-8 (e.g. iconv -f latin1 -t utf-8) or drop that line") from None


def _local_files(path: str, data_dir: Optional[str]) -> List[str]:
    if os.path.isfile(path):
        return [path]
    root = os.path.join(path, data_dir) if data_dir else path
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


def load_documents(cfg: DataConfig):
    """The raw documents as a `datasets.Dataset`, with `cfg.text_field` checked and empties dropped."""
    import datasets

    datasets.disable_progress_bars()
    path = cfg.path
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
                raise ConfigError(f"data.path files must share one of the extensions {', '.join(_FILE_BUILDERS)}; "
                                  f"got {path}")
            ds = datasets.load_dataset(_FILE_BUILDERS[exts.pop()], data_files=files, split="train")
        elif _looks_local(path):
            raise ConfigError(f"dataset path {path} does not exist: check data.path")
        else:
            ds = datasets.load_dataset(path, data_dir=cfg.data_dir, split="train")
    except ConfigError:
        raise
    except UnicodeDecodeError as err:
        raise ConfigError(f"dataset {path} is not valid UTF-8 ({err.reason} at byte {err.start}): "
                          "re-encode it as UTF-8") from None
    except Exception as err:  # datasets raises many types for "not there" / "no network"
        name = type(err).__name__
        first = str(err).splitlines()[0] if str(err) else name
        if "DatasetNotFound" in name or "doesn't exist on the Hub" in str(err) or "ConnectionError" in name \
                or "couldn't be found" in str(err).lower() or "offline" in str(err).lower():
            raise ConfigError(f"cannot load dataset {path!r}: it is not a local path and the Hugging Face Hub is "
                              f"unreachable or has no such dataset; use data=rust_sample offline, or "
                              f"data.path=<local dir or files>") from None
        if "data_dir" in str(err) or "FileNotFound" in name or "EmptyDataset" in name:
            raise ConfigError(f"no data files in {path} (data_dir={cfg.data_dir}): "
                              "check data.path and data.data_dir") from None
        raise ConfigError(f"cannot read dataset {path}: {first}") from None
    if cfg.text_field not in ds.column_names:
        raise ConfigError(f"data.text_field={cfg.text_field!r} is not a field of {path}; fields found: "
                          f"{', '.join(ds.column_names)}: set data.text_field to one of them")
    if cfg.max_documents is not None and len(ds) > cfg.max_documents:
        ds = ds.select(range(cfg.max_documents))
    n_records = len(ds)
    field = cfg.text_field
    ds = ds.filter(lambda text: isinstance(text, str) and bool(text.strip()), input_columns=[field])
    if len(ds) == 0:
        raise ConfigError(f"dataset {path} has no text in field {field!r} ({n_records} records, all empty or "
                          f"missing): check data.path and data.text_field")
    if len(ds) < 2:
        raise ConfigError(f"dataset {path} has only {len(ds)} non-empty document; rtune needs at least 2 "
                          "(one to train on, one to validate)")
    return ds.select_columns([field])


def split_documents(n_documents: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, val) document indices; at least one of each, chosen by a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(n_documents)
    n_val = min(n_documents - 1, max(1, round(n_documents * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def pack(token_lists: Sequence[Sequence[int]], eos_id: int, seq_len: int) -> np.ndarray:
    """Concatenate documents, EOS after each, into [n_blocks, seq_len] int32; the tail padded with PAD."""
    lengths = np.fromiter((len(t) + 1 for t in token_lists), dtype=np.int64, count=len(token_lists))
    stream = np.full(int(lengths.sum()), eos_id, dtype=np.int32)
    ends = np.cumsum(lengths)
    for tokens, end, n in zip(token_lists, ends, lengths):
        stream[end - n:end - 1] = tokens
    n_blocks = -(-len(stream) // seq_len)
    blocks = np.full(n_blocks * seq_len, PAD, dtype=np.int32)
    blocks[: len(stream)] = stream
    return blocks.reshape(n_blocks, seq_len)


def _save_npy(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)  # atomic: readers never see a partial file


def _tokenize_and_pack(docs, indices: np.ndarray, split: str, tokenizer, tok_fp: str, docs_fp: str,
                       cfg: RTuneConfig) -> tuple[str, int, int]:
    """Tokenize one split with a cached `datasets.map`, pack it, save it; (path, tokens, blocks)."""
    cache = cfg.data.cache_dir
    key = _key(docs_fp, split, _key(*indices.tolist()), tok_fp)
    packed_path = os.path.join(cache, "packed", f"{key}-{cfg.data.seq_len}.npy")
    if os.path.exists(packed_path):
        blocks = np.load(packed_path, mmap_mode="r")
        return packed_path, int((blocks != PAD).sum()), blocks.shape[0]
    os.makedirs(os.path.join(cache, "tokenized"), exist_ok=True)
    os.makedirs(os.path.join(cache, "packed"), exist_ok=True)
    backend = tokenizer.backend_tokenizer  # the Rust tokenizer: no max-length warnings, batched
    field = cfg.data.text_field

    def tokenize(batch):
        return {"ids": [e.ids for e in backend.encode_batch(batch[field], add_special_tokens=False)]}

    tokenized = docs.select(indices).map(
        tokenize, batched=True, remove_columns=[field], new_fingerprint=key,
        cache_file_name=os.path.join(cache, "tokenized", f"{key}.arrow"), desc=f"tokenize {split}")
    blocks = pack(tokenized["ids"], tokenizer.eos_token_id, cfg.data.seq_len)
    _save_npy(packed_path, blocks)
    return packed_path, int((blocks != PAD).sum()), blocks.shape[0]


def get_tokenizer(cfg: RTuneConfig, docs, train_idx: np.ndarray, docs_fp: str):
    """The model's own tokenizer, or a BPE trained on the training documents (cached by content)."""
    from rtune.model import load_tokenizer_from, train_bpe_tokenizer

    m = cfg.model
    if m.tokenizer or m.name_or_path:
        return load_tokenizer_from(m.tokenizer or m.name_or_path, m.trust_remote_code, m.revision)
    key = _key(docs_fp, _key(*train_idx.tolist()), m.tokenizer_vocab_size, "bpe-v1")
    out_dir = os.path.join(cfg.data.cache_dir, "tokenizers", key)
    if os.path.isdir(out_dir):
        return load_tokenizer_from(out_dir, trust_remote_code=False)
    train_docs = docs.select(train_idx)
    texts = (train_docs[i: i + 256][cfg.data.text_field] for i in range(0, len(train_docs), 256))
    return train_bpe_tokenizer(texts, m.tokenizer_vocab_size, out_dir)


def prepare_data(cfg: RTuneConfig):
    """Run the whole pipeline (cache hits are cheap); returns (PreparedData, tokenizer)."""
    from rtune.model import tokenizer_fingerprint

    docs = load_documents(cfg.data)
    docs_fp = _key(docs._fingerprint, cfg.data.text_field)
    train_idx, val_idx = split_documents(len(docs), cfg.data.val_fraction, cfg.seed)
    tokenizer = get_tokenizer(cfg, docs, train_idx, docs_fp)
    tok_fp = tokenizer_fingerprint(tokenizer)
    tokenizer_dir = os.path.join(cfg.data.cache_dir, "tokenizers", f"saved-{tok_fp}")
    if not os.path.isdir(tokenizer_dir):
        tokenizer.save_pretrained(tokenizer_dir)  # workers load this copy: no hub round-trips
    train_path, train_tokens, train_blocks = _tokenize_and_pack(docs, train_idx, "train", tokenizer, tok_fp, docs_fp,
                                                                cfg)
    val_path, val_tokens, val_blocks = _tokenize_and_pack(docs, val_idx, "val", tokenizer, tok_fp, docs_fp, cfg)
    prepared = PreparedData(train_path, val_path, tokenizer_dir, len(train_idx), len(val_idx),
                            train_tokens, val_tokens, train_blocks, val_blocks, cfg.data.seq_len)
    return prepared, tokenizer


class PackedBlocks:
    """A map-style torch dataset over a packed `.npy` (memory-mapped: cheap in every worker)."""

    def __init__(self, path: str, pad_token_id: int):
        self.blocks = np.load(path, mmap_mode="r")
        self.pad_token_id = pad_token_id

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, index: int) -> dict:
        import torch

        block = torch.from_numpy(np.array(self.blocks[index], dtype=np.int64))
        pad = block == PAD
        # Padding sits only at the end of the last block, so causal attention never lets a real
        # token see it; masking its labels keeps it out of the loss. No attention mask needed.
        return {"input_ids": block.masked_fill(pad, self.pad_token_id), "labels": block.masked_fill(pad, -100)}

