"""The reference model of DPO and GRPO (beta > 0): where log ref(y) of each reply comes from.

    adapters    with LoRA, the policy itself with its adapters disabled: no second copy of the model
    precompute  one pass of the initial model over every pair (train and validation) before step 1;
                cached under data.cache_dir by model and data, and written into every checkpoint, so
                re-runs and resumes skip the pass
    live        a frozen copy of the initial model, wrapped like the policy (a replica under DDP,
                sharded under FSDP2 and ZeRO-3), run forward on every micro-batch

Each gives `pair_logps(batch, split)`: the PairLogps of the batch's pairs under the reference; adapters and live
also give `token_logprobs(batch)`, GRPO's per-token view (its completions are new every step: always live).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Optional

import numpy as np
import torch
import torch.distributed as dist

from rtune.data.rows import collate
from rtune.worker.objectives import PairLogps, pair_logps

REFERENCE_FILE = "reference_logps.npz"  # in checkpoints: the precomputed tables, for exact resume


class AdapterReference:
    """LoRA: the same forward with the adapters switched off (peft's disable_adapter)."""

    def __init__(self, model, peft_model, autocast):
        self.model, self.peft_model, self.autocast = model, peft_model, autocast

    def token_logprobs(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad(), self.peft_model.disable_adapter(), self.autocast:
            return self.model(batch["input_ids"], batch["labels"], batch["position_ids"])

    def pair_logps(self, batch: Dict[str, torch.Tensor], split: str) -> PairLogps:
        return pair_logps(self.token_logprobs(batch), batch)


class LiveReference:
    """A frozen copy of the initial model, wrapped for inference the way the policy is wrapped."""

    def __init__(self, module, autocast):
        self.module, self.autocast = module, autocast

    def token_logprobs(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad(), self.autocast:
            return self.module(batch["input_ids"], batch["labels"], batch["position_ids"])

    def pair_logps(self, batch: Dict[str, torch.Tensor], split: str) -> PairLogps:
        return pair_logps(self.token_logprobs(batch), batch)


class PrecomputedReference:
    """Tables of log ref(y) per sequence id (2k: chosen of pair k, 2k + 1: rejected), one per split."""

    def __init__(self, tables: Dict[str, np.ndarray]):
        self.tables = tables

    def pair_logps(self, batch: Dict[str, torch.Tensor], split: str) -> PairLogps:
        shape = pair_logps(torch.zeros(batch["labels"].shape, dtype=torch.float64, device=batch["labels"].device),
                           batch)  # lengths and pair ids, from the batch alone
        table = torch.from_numpy(self.tables[split]).to(shape.chosen.device)
        return shape._replace(chosen=table[2 * shape.pair_ids], rejected=table[2 * shape.pair_ids + 1])

    def save(self, directory: str) -> None:
        path = os.path.join(directory, REFERENCE_FILE)
        np.savez(f"{path}.tmp.npz", **self.tables)
        os.replace(f"{path}.tmp.npz", path)


def cache_path(cfg, prepared) -> str:
    """Where the tables of this model on these rows are cached: keyed by everything they depend on."""
    m = cfg.model
    identity = {"model": m.name_or_path, "revision": m.revision, "from_config": m.from_config,
                "seed": cfg.seed if m.name_or_path is None else None, "attn": m.attn_implementation,
                "precision": cfg.trainer.precision, "train": prepared.train_path, "val": prepared.val_path,
                "tokenizer": prepared.tokenizer_dir}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return os.path.join(cfg.data.cache_dir, "reference", f"{key}.npz")


def load_tables(path: str) -> Optional[Dict[str, np.ndarray]]:
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as data:  # plain float arrays: data, never code
        return {name: data[name] for name in data.files}


def make_reference(cfg, strategy, prepared, datasets: Dict[str, object], resume_dir: Optional[str], build_initial,
                   rank: int, world_size: int, device, autocast):
    """The reference this run's DPO uses (see the module docstring), ready before step 1.

    build_initial: builds the initial model again (for `live`). Precomputed tables come from the checkpoint
    being resumed, else the cache, else a pass of the policy, which before step 1 *is* the initial model.
    """
    if cfg.peft.adapters:
        return AdapterReference(strategy.model, strategy.raw, autocast)
    if cfg.objective.reference == "live" or cfg.objective.name == "grpo":  # GRPO's completions are new every step
        return LiveReference(strategy.reference_module(build_initial()), autocast)
    tables = load_tables(os.path.join(resume_dir, REFERENCE_FILE)) if resume_dir else None
    path = cache_path(cfg, prepared)
    tables = tables or load_tables(path)
    if tables is None:
        if resume_dir is not None:
            raise RuntimeError(f"{resume_dir} has no {REFERENCE_FILE} and the cache {path} is gone: the reference "
                               "log-probs cannot be recomputed from trained weights; start a new run_name")
        tables = compute_tables(strategy.model, datasets, cfg.trainer.micro_batch_size, rank, world_size, device,
                                autocast)
        if not os.path.exists(path):  # every node keeps its own copy (the cache may not be shared)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            np.savez(f"{path}.tmp-{os.getpid()}.npz", **tables)
            os.replace(f"{path}.tmp-{os.getpid()}.npz", path)
    return PrecomputedReference(tables)


@torch.no_grad()
def compute_tables(model, datasets: Dict[str, object], micro_batch_size: int, rank: int, world_size: int, device,
                   autocast) -> Dict[str, np.ndarray]:
    """One pass of `model` (the initial policy) over every row of each split, shared out across ranks.

    Every rank runs the same number of forward passes (sharded models gather collectively); a rank
    with fewer rows re-reads row 0 and discards it. The tables are gathered onto every rank.
    """
    was_training = model.training
    model.eval()
    tables = {}
    for split, dataset in datasets.items():
        per_rank = -(-len(dataset) // world_size)
        indices = [i if i < len(dataset) else -1 for i in range(rank, per_rank * world_size, world_size)]
        found: Dict[int, float] = {}
        for start in range(0, len(indices), micro_batch_size):
            chunk = indices[start:start + micro_batch_size]
            batch = {k: v.to(device) for k, v in collate([dataset[max(i, 0)] for i in chunk]).items()}
            with autocast:
                logprobs = model(batch["input_ids"], batch["labels"], batch["position_ids"])
            pairs = pair_logps(logprobs.double(), batch)
            real = {int(k) for i, row in zip(chunk, batch["sequence_ids"]) if i >= 0 for k in row.tolist() if k >= 0}
            for k, chosen, rejected in zip(pairs.pair_ids.tolist(), pairs.chosen.tolist(), pairs.rejected.tolist()):
                if 2 * k in real:
                    found[2 * k], found[2 * k + 1] = chosen, rejected
        gathered = [found]
        if dist.is_available() and dist.is_initialized():
            gathered = [None] * world_size
            dist.all_gather_object(gathered, found)
        merged = {k: v for part in gathered for k, v in part.items()}
        table = np.full(max(merged) + 1 if merged else 0, np.nan)
        for k, v in merged.items():
            table[k] = v
        tables[split] = table
    model.train(was_training)
    return tables
