"""data.engine=ray: the cluster prepares the data; the driver plans and keeps counts, never the corpus.

1. The driver lists the corpus files (sorted, as `datasets` reads them) and keys the result by their names,
   sizes and modification times, the tokenizer, seq_len and the split settings.
2. Count: one Ray task per file returns its number of records and where the empty ones are (plain tasks:
   they start on Ray's prestarted workers, where a first Ray Data pipeline spends seconds starting up). They
   go out first, while the driver loads the tokenizer and looks for the manifest: a cache hit cancels them
   (it needs no counts); otherwise Ray Data's helper actors start while they finish.
3. The driver splits documents into train / validation exactly as the datasets engine does
   (`split_documents` over the global document index), so both engines train on the same rows. A BPE
   trained on the data is trained here from the training text, streamed one file at a time.
4. Tokenize: Ray Data's pool of actors across the cluster (`ray_tasks.py`), one file per call. Raw text in
   concat packing: flat uint32 token shards per file and split under `data.cache_uri/<key>/{train,val}/`.
   Other formats and packings: the file's samples packed into rows, one packed directory per file and split.
   The driver collects only counts per (file, split) and writes `manifest.json` last. The manifest is the
   completeness marker: a key without one is prepared again (shard names are deterministic).
5. Workers read a split's shards back to back (`rows.TokenStream`, `rows.RowShards`). Raw text: row b is
   tokens [b*seq_len, (b+1)*seq_len), the datasets engine's concat packing row for row; other formats: the
   datasets engine's samples, packed within each file.

Why one file per call: Ray Data's block boundaries and output file names are not deterministic, a file is.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from typing import Callable, Dict, List, Tuple

import numpy as np

from rtune.config import RTuneConfig, is_uri, to_dict
from rtune.data.prepared import CHAT_FORMATS, PreparedData, data_key, nothing_left, packing_of, split_documents
from rtune.data.ray_tasks import PackFiles, TokenizeFiles, count_file, download_dir, filesystem_of, train_bpe
from rtune.data.rows import SHARDS_META, TOKENS_META
from rtune.data.sources import corpus_files
from rtune.data.templates import end_of_turn
from rtune.data.tokenizer import model_tokenizer, with_template
from rtune.errors import UserError, user_error_in
from rtune.model import load_tokenizer_from, tokenizer_fingerprint

MANIFEST = "manifest.json"


# ---- storage the driver reads and writes ---------------------------------------------------------------------

def _exists(root: str, name: str) -> bool:
    from pyarrow import fs as pafs

    filesystem, path = filesystem_of(root)
    return filesystem.get_file_info(f"{path}/{name}").type != pafs.FileType.NotFound


def _read_json(root: str, name: str) -> dict:
    filesystem, path = filesystem_of(root)
    with filesystem.open_input_stream(f"{path}/{name}") as f:
        return json.loads(f.read())


def _write_json(root: str, name: str, value: dict) -> None:
    filesystem, path = filesystem_of(root)
    filesystem.create_dir(os.path.dirname(f"{path}/{name}"), recursive=True)
    with filesystem.open_output_stream(f"{path}/{name}") as f:
        f.write(json.dumps(value, indent=1).encode())


def _node_cache(cfg: RTuneConfig) -> str:
    """This node's own cache: RTUNE_CACHE_DIR where the node was started with one, else data.cache_dir."""
    return os.path.abspath(os.path.expanduser(os.environ.get("RTUNE_CACHE_DIR") or cfg.data.cache_dir))


# ---- the driver ----------------------------------------------------------------------------------------------

def _collect(run: Callable[[], list]) -> list:
    """Run a Ray Data pipeline (`take_all`) or a `ray.get`; a UserError raised in a task or actor (a bad file or
    record) comes back as itself, its one line, without Ray's wrapping."""
    try:
        return run()
    except Exception as err:
        found = user_error_in(err)
        if found is not None:  # its one line (Ray Data appends a note on retries to the message)
            raise UserError(str(found).splitlines()[0]) from None
        raise


def _start_ray_data() -> None:
    """Ray Data's settings for rtune, and its helper actors started now, while the counts finish (called only
    when there is data to prepare). A cluster's first pipeline otherwise starts them (stats, autoscaling
    coordinator, actor locations: detached actors, each a fresh Python process, ~1.5 s of CPU) just as the
    tokenizer actors start, and on 2 cores that delayed the first files by 2 s. Best effort: these are Ray
    Data internals; if they move, the pipeline starts the actors itself, as before."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO / WARNING lines would bury rtune's
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.wait_for_min_actors_s = 600  # a pool that cannot start fails instead of waiting forever
    # an actor's UserError (a malformed record) comes back as itself, not as a UserCodeException whose cause
    # stayed behind in the actor's process
    ctx.raise_original_map_exception = True
    try:
        from ray.data._internal.cluster_autoscaler import get_or_create_autoscaling_coordinator
        from ray.data._internal.execution.node_trackers import get_or_create_actor_location_tracker
        from ray.data._internal.stats import get_or_create_stats_actor
    except ImportError:
        return
    for start in (get_or_create_stats_actor, get_or_create_autoscaling_coordinator,
                  get_or_create_actor_location_tracker):
        start()  # returns at once; the actor starts in the background


def _actor_runtime_env() -> dict:
    """The tokenizer actors run with jemalloc, the allocator Ray ships for its own processes (Linux wheels), where
    the driver's Ray has it and RTUNE_JEMALLOC is not 0. Under glibc's malloc the Rust tokenizer's heap fragments
    file after file: tokenizing the same 10 MB file took 2.3 s of CPU in a fresh process and 3.1 s after a few
    files, where with jemalloc it stays at ~2.2 s. Ray starts its raylet with jemalloc but not its workers. The
    path is the driver's: a node whose Ray lives elsewhere warns that it cannot preload it and runs as before."""
    import ray

    library = os.path.join(os.path.dirname(ray.__file__), "core", "libjemalloc.so")
    if (sys.platform != "linux" or os.environ.get("RTUNE_JEMALLOC") == "0" or os.environ.get("LD_PRELOAD")
            or not os.path.exists(library)):
        return {}
    return {"env_vars": {"LD_PRELOAD": library}}  # merged with the job's env_vars by Ray


def _stat(path: str) -> Tuple[str, int, str]:
    if path.startswith("hf://"):
        from huggingface_hub import HfFileSystem

        info = HfFileSystem().info(path[len("hf://"):])
        return path, int(info.get("size", 0)), str(info.get("blob_id") or info.get("last_commit"))
    st = os.stat(path)
    return path, st.st_size, str(st.st_mtime_ns)


def _plan(cfg: RTuneConfig, files: List[str], n_train_files: int, counts: List[dict]) -> List[dict]:
    """Per file: how many of its documents to keep and which of them (by position) are validation."""
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
            raise UserError(f"dataset {path} has no text in field {d.text_field!r}: check data.path and "
                            "data.text_field")
        if total < needed:
            raise UserError(f"dataset {path} has only {total} non-empty document; rtune needs at least {needed} "
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


UNITS_PER_ACTOR = 4  # fewer files than this per actor: files are cut into parts, so no actor idles at the end


def _units(plan: List[dict], actors: int) -> List[dict]:
    """The actor pool's work items, in stream order: whole files, or, with fewer than UNITS_PER_ACTOR files per
    actor, each file cut into equal parts by document (5 files on 2 actors left one actor idle for the last
    third of the time). A part is read from its file (documents before it are parsed, not tokenized); its
    validation positions stay the file's."""
    parts = max(1, -(-UNITS_PER_ACTOR * actors // max(1, len(plan))))
    units: List[dict] = []
    for item in plan:
        keep, val = item["keep_docs"], json.loads(item["val"])
        n = max(1, min(parts, keep))
        bounds = [keep * k // n for k in range(n + 1)]
        for start, stop in zip(bounds, bounds[1:]):
            units.append({"index": len(units), "path": item["path"], "skip_docs": start, "keep_docs": stop,
                          "val": json.dumps([v for v in val if start <= v < stop])})
    return units


def _ready_tokenizer(cfg: RTuneConfig, key: str):
    """The model's tokenizer, or a BPE trained before on this data; None when one must be trained."""
    tokenizer = model_tokenizer(cfg)
    if tokenizer is not None:
        return tokenizer
    out_dir = _bpe_dir(cfg, key)
    return with_template(load_tokenizer_from(out_dir, trust_remote_code=False), cfg.data) if os.path.isdir(out_dir) \
        else None


def _bpe_dir(cfg: RTuneConfig, key: str) -> str:
    """Where the BPE trained on this data is kept (the driver's cache: it is trained there)."""
    return os.path.join(cfg.data.cache_dir, "tokenizers", f"ray-{key}")


def _train_bpe(cfg: RTuneConfig, plan: List[dict], n_train_files: int, key: str):
    """A BPE trained on the training documents by one Ray task, which streams the files itself: the driver only
    receives the tokenizer's files (~1 MB), whatever the corpus size."""
    import ray

    jobs = [p for p in plan[:n_train_files] if p["keep_docs"]]
    task = ray.remote(num_cpus=1, max_retries=0)(train_bpe)
    files = _collect(lambda: ray.get(task.remote(jobs, asdict(cfg.data), cfg.model.tokenizer_vocab_size)))
    out_dir = _bpe_dir(cfg, key)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(content)
    try:
        os.replace(tmp, out_dir)  # atomic: a concurrent run never sees half a tokenizer
    except OSError:  # another run got there first with the same content
        shutil.rmtree(tmp, ignore_errors=True)
    return with_template(load_tokenizer_from(out_dir, trust_remote_code=False), cfg.data)


def _prepared(root: str, manifest: dict, cfg: RTuneConfig, tokenizer) -> PreparedData:
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    stats = {k: train.get(k, 0) + val.get(k, 0) for k in ("skipped_no_reply", "dropped_too_long", "truncated",
                                                           "skipped_identical")}
    return PreparedData(f"{root}/train", f"{root}/val", f"{root}/tokenizer", train["documents"], val["documents"],
                        train["tokens"], val["tokens"], train["rows"], val["rows"], manifest["seq_len"],
                        packing=packing_of(cfg), train_target_tokens=train["target_tokens"],
                        val_target_tokens=val["target_tokens"], **stats,
                        end_of_turn=end_of_turn(tokenizer) if cfg.data.format in CHAT_FORMATS else None)


def _save_tokenizer(tokenizer, root: str, cache_dir: str, key: str) -> None:
    from pyarrow import fs as pafs

    filesystem, path = filesystem_of(root)
    if not is_uri(root):
        tokenizer.save_pretrained(f"{path}/tokenizer")
        return
    local = os.path.join(cache_dir, "tokenizers", f"upload-{key}")
    tokenizer.save_pretrained(local)
    filesystem.create_dir(f"{path}/tokenizer", recursive=True)
    pafs.copy_files(local, f"{path}/tokenizer", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=filesystem)


def _split_summaries(cfg: RTuneConfig, root: str, written: List[dict], stream: bool) -> Dict[str, dict]:
    """Per split: list its shards in order (tokens.json / shards.json) and total their counts."""
    d, out = cfg.data, {}
    for split in ("train", "val"):
        mine = sorted((r for r in written if r["split"] == split), key=lambda r: r["index"])
        total = {k: sum(r[k] for r in mine) for k in ("tokens", "documents", "target_tokens", "rows",
                                                      "skipped_no_reply", "dropped_too_long", "truncated",
                                                      "skipped_identical")}
        if stream:
            _write_json(root, f"{split}/{TOKENS_META}", {"seq_len": d.seq_len, "files": [
                [f"tok-{r['index']:06d}.bin", r["tokens"]] for r in mine if r["tokens"]]})
            total["rows"] = max(1, -(-total["tokens"] // d.seq_len))
        else:
            if total["rows"] == 0:
                source = d.eval_path if split == "val" and d.eval_path else d.path
                raise nothing_left(split, source, total, cfg)
            _write_json(root, f"{split}/{SHARDS_META}", {"shards": [
                f"rows-{r['index']:06d}" for r in mine if r["rows"]]})
        out[split] = total
    return out


def _data_key(cfg: RTuneConfig, tokenizer, source_key: str) -> Tuple[str, str]:
    """The prepared data's key and its directory under data.cache_uri."""
    d = cfg.data
    key = data_key(source_key, tokenizer_fingerprint(tokenizer), d.seq_len, packing_of(cfg), d.truncation)
    return key, f"{d.cache_uri.rstrip('/')}/{key}"


def _found(root: str, cfg: RTuneConfig, tokenizer):
    """The data prepared before at root, by this or any other run on this storage."""
    print(f"[rtune] data.engine=ray: prepared data found at {root}", flush=True)
    return _prepared(root, _read_json(root, MANIFEST), cfg, tokenizer)


def prepare_with_ray(cfg: RTuneConfig):
    """Prepare the data on the Ray cluster the driver is connected to; returns (PreparedData, tokenizer)."""
    import ray

    d = cfg.data
    if not ray.is_initialized():
        raise RuntimeError("data.engine=ray needs a connected Ray cluster (the driver starts one first)")
    train_files = corpus_files(d, d.path)
    files = train_files + (corpus_files(d, d.eval_path) if d.eval_path else [])
    started = time.perf_counter()
    cpus = int(ray.available_resources().get("CPU", 1))  # before the count tasks take some
    # Plain Ray tasks (Ray Data's first pipeline costs seconds of start-up; these take prestarted workers), sent
    # first: they count while this process imports transformers and loads the tokenizer.
    count = ray.remote(num_cpus=1)(count_file)
    counting = [count.remote({"index": i, "path": p}, asdict(d)) for i, p in enumerate(files)]
    source_key = data_key("ray-v2", *map(_stat, files), len(train_files), d.format, d.text_field, d.messages_field,
                      d.train_on, d.val_fraction, cfg.seed, d.max_documents)
    tokenizer = _ready_tokenizer(cfg, source_key)
    if tokenizer is not None:
        key, root = _data_key(cfg, tokenizer, source_key)
        if _exists(root, MANIFEST):  # a cache hit needs no counts (they are keyed by the files' names, sizes, times)
            for ref in counting:
                ray.cancel(ref)
            return _found(root, cfg, tokenizer), tokenizer
    _start_ray_data()  # there is work for it: its helper actors start while the counts finish
    import ray.data

    counts = _collect(lambda: ray.get(counting))
    plan = _plan(cfg, files, len(train_files), counts)
    if tokenizer is None:
        tokenizer = _train_bpe(cfg, plan, len(train_files), source_key)
        key, root = _data_key(cfg, tokenizer, source_key)
        if _exists(root, MANIFEST):
            return _found(root, cfg, tokenizer), tokenizer
    _save_tokenizer(tokenizer, root, d.cache_dir, key)
    plan_s = time.perf_counter() - started
    # CPUs free now, or at the start if more: a count task's CPU shows as released only some time after it ends
    actors = max(1, min(len(files), max(cpus, int(ray.available_resources().get("CPU", 1)))))
    # Raw text in concat packing is a token stream; anything else is packed into rows, file by file.
    stream = d.format == "text" and packing_of(cfg) == "concat"
    settings = {"root": root, "cache_dir": d.cache_dir, "field": d.text_field, "eos_token_id": tokenizer.eos_token_id,
                "cfg": to_dict(cfg)}
    actor = TokenizeFiles if stream else PackFiles
    started = time.perf_counter()
    units = _units(plan, actors)
    written = _collect(ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
        type(actor.__name__, (actor,), {"settings": settings}),
        batch_size=1, num_cpus=1,  # one file (or part) per call: the work spreads over the nodes
        # the next part waits at the actor, so it starts the moment the last one ends (one at a time left a
        # ~0.2 s round trip between parts); at most one part more queues at an actor at the end
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
        runtime_env=_actor_runtime_env()).take_all)
    tokenize_s = time.perf_counter() - started
    nodes = {}
    for r in written:
        if r["split"] == "train":
            nodes[r["node"]] = nodes.get(r["node"], 0) + 1
    manifest = {"version": 2, "key": key, "seq_len": d.seq_len, "files": len(files),
                "splits": _split_summaries(cfg, root, written, stream), "parts": len(units), "parts_per_node": nodes,
                "tokenizer_actors": actors, "plan_s": round(plan_s, 1), "tokenize_s": round(tokenize_s, 1)}
    _write_json(root, MANIFEST, manifest)  # last: the shards are complete once this exists
    cut = f" in {len(units)} parts" if len(units) > len(files) else ""
    print(f"[rtune] data.engine=ray: {len(files)} file(s){cut} tokenized by {actors} actor(s) on {len(nodes)} node(s) "
          f"into {root} (planned in {plan_s:.1f} s, tokenized in {tokenize_s:.1f} s)", flush=True)
    return _prepared(root, manifest, cfg, tokenizer), tokenizer


def localize(prepared, cfg: RTuneConfig):
    """This node's view of the ray engine's data: the shared directory itself, or a node-local copy of a URI."""
    from dataclasses import replace

    root = os.path.dirname(prepared.train_path)
    if is_uri(root):
        local = download_dir(root, os.path.join(_node_cache(cfg), "shards", os.path.basename(root)))
    elif os.path.exists(os.path.join(root, MANIFEST)):
        local = root
    else:
        import socket

        raise UserError(f"the prepared data at {root} is not visible on node {socket.gethostname()}: set "
                        "data.cache_uri to a directory every node mounts, or a storage URI (s3://, gs://)")
    return replace(prepared, train_path=f"{local}/train", val_path=f"{local}/val", tokenizer_dir=f"{local}/tokenizer")
