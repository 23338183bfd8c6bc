"""Sharded FSDP2 state: every rank writes, and reads back, only its own slices (strategy.fsdp_state=sharded).

Layout: `<checkpoint>/fsdp_shards/rank<NNNNN>.safetensors`, one file per rank, in the safetensors layout of
torch.distributed.checkpoint's `HuggingFaceStorageWriter`: each file holds the rank's slice of every weight
and optimizer tensor, and its header records where each slice sits in the whole tensor
(`DCP_SHARDING_INFO`). Reading goes through `torch.distributed.checkpoint.load` with
`HuggingFaceStorageReader`, which gives each rank the slices its own shards need, whatever the worker
count that wrote them: a run resumes on another worker count, and `rtune export` (one process) reads whole
tensors. No pickle anywhere (DCP's default `.metadata` file is one), so a checkpoint stays data.

Keys: `model.<name>` and `optim.<name>.<state>`; a tensor that is two parameters (tied embeddings) is stored
once, under its first name, and looked up the same way on load.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import torch

SHARD_DIR = "fsdp_shards"


def shard_file(rank: int) -> str:
    return f"rank{rank:05d}.safetensors"


def _local(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def flatten(model_state: Dict[str, torch.Tensor], optim_state: Optional[Dict[str, Any]] = None
            ) -> Dict[str, torch.Tensor]:
    """Flat names -> the same tensor objects (DTensors under FSDP); tied tensors once, under the first name."""
    items = [(f"model.{name}", t) for name, t in model_state.items()]
    for name, state in ((optim_state or {}).get("state") or {}).items():
        items += [(f"optim.{name}.{key}", t) for key, t in state.items() if isinstance(t, torch.Tensor)]
    flat: Dict[str, torch.Tensor] = {}
    seen = set()
    for key, tensor in items:
        local = _local(tensor)
        if local.numel():  # an empty slice has no storage to share
            identity = (local.data_ptr(), local.dtype, tuple(local.shape))
            if identity in seen:
                continue
            seen.add(identity)
        flat[key] = tensor
    return flat


def write(flat: Dict[str, torch.Tensor], out_dir: str, rank: int) -> None:
    """This rank's file: its slice of every sharded tensor (and, on rank 0, the replicated ones).

    Streamed from the live tensors (safetensors writes from their memory): no copy, so a checkpoint adds
    nothing to a rank's peak memory. The training thread waits for this local write; the copy to storage
    runs in the background.
    """
    from safetensors.torch import save_file
    from torch.distributed.checkpoint._hf_utils import (CUSTOM_METADATA_KEY, DCP_VERSION_KEY, FORMAT_KEY,
                                                        FORMAT_VALUE, HF_DCP_VERSION, SAVED_OFFSETS_KEY)
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    tensors, where = {}, {}
    for key, tensor in flat.items():
        if isinstance(tensor, DTensor):
            local = tensor.to_local()
            if not local.numel():  # uneven sharding left this rank nothing of it
                continue
            _, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)
        elif rank == 0:  # replicated (the optimizer's step counts): one copy is enough
            local, offset = tensor, [0] * tensor.dim()
        else:
            continue
        tensors[key] = local.detach().to("cpu").contiguous()  # no-ops for CPU shards; a GPU's are copied
        where[key] = {SAVED_OFFSETS_KEY: [int(o) for o in offset]}
    os.makedirs(os.path.join(out_dir, SHARD_DIR), exist_ok=True)
    save_file(tensors, os.path.join(out_dir, SHARD_DIR, shard_file(rank)),
              metadata={CUSTOM_METADATA_KEY: json.dumps(where), DCP_VERSION_KEY: str(HF_DCP_VERSION),
                        FORMAT_KEY: FORMAT_VALUE})


def load(flat: Dict[str, torch.Tensor], ckpt_dir: str) -> None:
    """Fill every tensor of `flat` in place (a DTensor: its local slice) from the shards of any worker count."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    # no_dist: each rank plans its own reads; no collective, so a rank reads only the slices it needs.
    dcp.load(flat, storage_reader=HuggingFaceStorageReader(os.path.join(ckpt_dir, SHARD_DIR)), no_dist=True)


def is_sharded(ckpt_dir: str) -> bool:
    return os.path.isdir(os.path.join(ckpt_dir, SHARD_DIR))


def consolidated_model(ckpt_dir: str, trust_remote_code: bool = False):
    """The whole model of a sharded checkpoint, in one process (export, generate): built from its config.json,
    every tensor read from the ranks' shards."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(ckpt_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    load(flatten(model.state_dict()), ckpt_dir)
    return model
