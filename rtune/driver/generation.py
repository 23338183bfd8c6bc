"""Generation on the cluster: a prompt file through a pool of engine actors, written in shards a re-run skips.

    generate_file(cfg, model, prompts_path, output, sampling)   `rtune generate prompts=... output=...`
    generate_shards(cfg, model, prompts, out_dir, sampling)     the same for prompts in memory (`rtune eval`)

The prompts are cut into shards of `generation.shard_size`; Ray Data hands the shards not yet on disk to a pool of
actors (one per GPU, or one per `generation.cpus_per_actor` CPUs), each holding one engine (`engine.py`) for its
lifetime. An actor writes each finished shard atomically as `shard-<i>.jsonl` under the output's shard directory,
beside a manifest that pins the model, the prompts (their hash) and the sampling: a re-run of the same command
finds the finished shards and generates only the rest; other settings are refused instead of mixed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from typing import Any, Dict, List, Optional

from rtune.config import GenerationConfig, RTuneConfig
from rtune.data.prompts import read_prompt_file
from rtune.driver.cluster import connect
from rtune.engine import Sampling, encode_prompts
from rtune.errors import UserError, user_error_in
from rtune.inference import load_engine

MANIFEST = "manifest.json"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.jsonl"


class EngineActor:
    """A Ray Data actor holding one engine; each call generates one shard and writes it. Settings arrive as class
    attributes of a subclass made per call (constructor arguments would travel through the object store)."""

    settings: Dict[str, Any] = {}

    def __init__(self):
        s = self.settings
        self.engine = load_engine(s["model"], s["backend"], max_batch_size=s["max_batch_size"],
                                  trust_remote_code=s["trust_remote_code"], **s["vllm"])
        self.sampling = Sampling(**{**s["sampling"], "stop": tuple(s["sampling"]["stop"]),
                                    "stop_token_ids": tuple(s["sampling"]["stop_token_ids"])})

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[Any]]:
        index = int(batch["index"][0])
        rows = json.loads(batch["rows"][0])
        started = time.perf_counter()
        chat = [isinstance(r["prompt"], list) or self.settings["chat"] for r in rows]
        prompt_ids = [encode_prompts(self.engine.tokenizer, [r["prompt"]], c, self.settings["system"])[0]
                      for r, c in zip(rows, chat)]
        results = self.engine.generate(prompt_ids, self.sampling)
        details = self.settings["details"]
        lines = []
        for row, ids, completions in zip(rows, prompt_ids, results):
            out = {**row, "prompt_tokens": len(ids), "completions": [
                {"text": c.text, "finish_reason": c.finish_reason, "stop_reason": c.stop_reason,
                 "tokens": len(c.token_ids), "logprob": round(sum(c.logprobs), 6),
                 **({"token_ids": c.token_ids, "logprobs": c.logprobs} if details else {})} for c in completions]}
            lines.append(json.dumps(out) + "\n")
        path = os.path.join(self.settings["out_dir"], shard_name(index))
        with open(f"{path}.tmp-{os.getpid()}", "w") as f:
            f.writelines(lines)
        os.replace(f"{path}.tmp-{os.getpid()}", path)  # whole or absent: a re-run trusts what it finds
        generated = sum(c["tokens"] for line in lines for c in json.loads(line)["completions"])
        return {"index": [index], "tokens": [generated], "seconds": [time.perf_counter() - started]}


def _actors(gen: GenerationConfig, use_gpu: bool, shards: int) -> int:
    import ray

    if gen.num_actors:
        return min(gen.num_actors, shards)
    free = ray.available_resources()
    on_offer = int(free.get("GPU", 0)) if use_gpu else int(free.get("CPU", 1) // gen.cpus_per_actor)
    return max(1, min(on_offer, shards))


def generate_shards(cfg: RTuneConfig, model: str, rows: List[Dict[str, Any]], out_dir: str, sampling: Sampling,
                    chat: bool = False, system: str = "", details: bool = False, identity: Optional[dict] = None
                    ) -> Dict[str, Any]:
    """Generate for every row (a dict with a `prompt`) into out_dir's shards; returns what this call did.

    identity: what the manifest pins besides the model and sampling (a prompt file's hash); finished shards of
    the same identity are kept, a manifest of another is refused."""
    gen = cfg.generation
    os.makedirs(out_dir, exist_ok=True)
    rows_hash = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    manifest = {"model": model, "sampling": asdict(sampling), "chat": chat, "system": system, "details": details,
                "shard_size": gen.shard_size, "prompts": len(rows), "prompts_sha256": rows_hash, **(identity or {})}
    _pin(out_dir, manifest)
    n_shards = -(-len(rows) // gen.shard_size)
    todo = [i for i in range(n_shards) if not os.path.exists(os.path.join(out_dir, shard_name(i)))]
    report = {"shards": n_shards, "skipped": n_shards - len(todo), "generated_tokens": 0, "actors": 0,
              "seconds": 0.0}
    if not todo:
        return report
    import ray.data

    connect(cfg, driver_progress=False)
    actors = _actors(gen, cfg.use_gpu, len(todo))
    settings = {"model": model, "backend": gen.backend, "max_batch_size": gen.max_batch_size, "chat": chat,
                "system": system, "details": details, "out_dir": out_dir, "sampling": asdict(sampling),
                "trust_remote_code": cfg.model.trust_remote_code,
                "vllm": {"gpu_memory_utilization": gen.vllm_gpu_memory_utilization} if gen.backend == "vllm" else {}}
    items = [{"index": i, "rows": json.dumps(rows[i * gen.shard_size:(i + 1) * gen.shard_size])} for i in todo]
    started = time.perf_counter()
    resources = {"num_gpus": 1} if cfg.use_gpu else {"num_cpus": gen.cpus_per_actor}
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO / WARNING lines would bury rtune's
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    ctx.raise_original_map_exception = True  # a UserError in an actor comes back as itself
    try:
        done = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            type("EngineActor", (EngineActor,), {"settings": settings}), batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors), **resources).take_all()
    except Exception as err:
        found = user_error_in(err)
        if found is not None:
            raise UserError(str(found).splitlines()[0]) from None
        raise
    report.update(actors=actors, generated_tokens=sum(d["tokens"] for d in done),
                  seconds=round(time.perf_counter() - started, 2))
    return report


def _pin(out_dir: str, manifest: Dict[str, Any]) -> None:
    """Write the manifest, or check that the one there describes the same generation."""
    path = os.path.join(out_dir, MANIFEST)
    manifest = json.loads(json.dumps(manifest))  # as it reads back (tuples become lists)
    if os.path.exists(path):
        with open(path) as f:
            found = json.load(f)
        if found != manifest:
            differs = sorted(k for k in set(found) | set(manifest) if found.get(k) != manifest.get(k))
            raise UserError(f"{out_dir} holds shards generated with other settings ({', '.join(differs)}): choose "
                            "another output, or delete that directory to start over")
        return
    with open(f"{path}.tmp", "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(f"{path}.tmp", path)


def read_shards(out_dir: str) -> List[Dict[str, Any]]:
    """Every generated row of a finished shard directory, in prompt order."""
    with open(os.path.join(out_dir, MANIFEST)) as f:
        manifest = json.load(f)
    rows: List[Dict[str, Any]] = []
    for i in range(-(-manifest["prompts"] // manifest["shard_size"])):
        with open(os.path.join(out_dir, shard_name(i))) as f:
            rows += [json.loads(line) for line in f]
    return rows


def generate_file(cfg: RTuneConfig, model: str, prompts_path: str, output: str, sampling: Sampling,
                  chat: bool = False, system: str = "", details: bool = False) -> Dict[str, Any]:
    """`rtune generate prompts=... output=...`: shards under `<output>.shards/`, then the output file in order."""
    rows = read_prompt_file(prompts_path)
    with open(prompts_path, "rb") as f:
        identity = {"prompts_file": os.path.abspath(prompts_path)}
        digest = hashlib.sha256(f.read()).hexdigest()
    out_dir = f"{os.path.abspath(output)}.shards"
    report = generate_shards(cfg, model, rows, out_dir, sampling, chat, system, details,
                             {**identity, "prompts_file_sha256": digest})
    lines = read_shards(out_dir)
    with open(f"{output}.tmp", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in lines)
    os.replace(f"{output}.tmp", output)
    return {**report, "output": os.path.abspath(output), "rows": len(lines), "shard_dir": out_dir}
