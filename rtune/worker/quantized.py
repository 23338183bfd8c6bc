"""QLoRA's frozen base on a worker: the model's linear layers quantized to 4-bit NF4 as they load (bitsandbytes).

A hub or local model loads quantized tensor by tensor. A model built from config has no files to load from: one
process per node initialises it (seeded: the weights `init_from_config` gives, module by module, each tensor written
once final and freed, so never whole in memory) and saves it once under the data cache, keyed by its config and
seed; every rank then loads that directory quantized, and checkpoints copy it as their `base_model/` (the base that
export and generate give the adapter its NF4 values from).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Optional, Tuple

import torch

from rtune.config import RTuneConfig
from rtune.model import config_for_tokenizer, load_quantized
from rtune.model_init import save_initialised


def compute_dtype(cfg: RTuneConfig) -> torch.dtype:
    """What each 4-bit matmul dequantizes to, and the dtype of the unquantized tensors (head, embeddings, norms)."""
    return torch.bfloat16 if cfg.trainer.precision == "bf16" else torch.float32


def from_config_dir(cfg: RTuneConfig, vocab_size: int, eos_token_id: int) -> str:
    """Where a from-config base is saved: keyed by everything its initial weights depend on."""
    import transformers

    model_config = config_for_tokenizer(cfg.model, vocab_size, eos_token_id)
    key = hashlib.sha256("|".join([model_config.to_json_string(), str(cfg.seed),
                                   transformers.__version__]).encode()).hexdigest()[:16]
    return os.path.join(cfg.data.cache_dir, "bases", key)


def _save_from_config(cfg: RTuneConfig, vocab_size: int, eos_token_id: int, out_dir: str) -> None:
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    with torch.random.fork_rng(devices=[]):  # the run's stream (LoRA's initialisation next) does not depend on
        torch.manual_seed(cfg.seed)  # whether this node found the base saved already
        save_initialised(config_for_tokenizer(cfg.model, vocab_size, eos_token_id), tmp,
                         trust_remote_code=cfg.model.trust_remote_code)  # never whole in memory
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    try:
        os.replace(tmp, out_dir)  # atomic: another node sharing the cache never reads half a model
    except OSError:  # another process saved the same weights first
        shutil.rmtree(tmp, ignore_errors=True)


def quantized_base(cfg: RTuneConfig, tokenizer, device: torch.device, local_rank: int) -> Tuple[object, Optional[str]]:
    """(the 4-bit model, the directory of a from-config base's fp32 weights, else None). A collective."""
    source, base_dir = cfg.model.name_or_path, None
    if source is None:
        base_dir = from_config_dir(cfg, len(tokenizer), tokenizer.eos_token_id)
        if local_rank == 0 and not os.path.isdir(base_dir):
            _save_from_config(cfg, len(tokenizer), tokenizer.eos_token_id, base_dir)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()  # the node's copy is saved before any rank reads it
        source = base_dir
    kwargs = {"attn_implementation": cfg.model.attn_implementation} if cfg.model.attn_implementation else {}
    model = load_quantized(source, compute_dtype(cfg), device, revision=None if base_dir else cfg.model.revision,
                           trust_remote_code=cfg.model.trust_remote_code, **kwargs)
    return model, base_dir
