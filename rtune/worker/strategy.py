"""DDP, FSDP2 and DeepSpeed ZeRO behind one small interface, so the worker loop has one shape.

    strategy.setup(model, adapter_dir)  LoRA (+ its saved adapter on resume), then wrap the model's
                                        TokenLogprobs view (DDP / fully_shard / deepspeed.initialize)
                                        and build the optimizer
    with strategy.accumulating(last): logprobs = strategy.model(ids, labels, positions); strategy.backward(loss)
    strategy.step()                  clip, optimizer, schedule (DeepSpeed does this inside backward)
    strategy.save(dir, with_hf)      a collective: resume state for every rank, HF weights on rank 0
    strategy.snapshot(with_hf)       a collective: the same copied into memory, written later by rank 0 (async
                                     upload); None: written by `save` in the training thread, copied in the background
    strategy.load(dir, state)        restore optimizer and schedule after `setup`

The loss handed to `backward` is already normalised over the whole step (all micro-batches, all
ranks, see loop.py), so no strategy divides it by the accumulation steps.

Which files each strategy writes into a checkpoint:
    ddp        rank 0: HF model (or LoRA adapter) + optimizer/scheduler in trainer_state.pt
    fsdp       fsdp_state=sharded: every rank its slice of the weights and optimizer state under
               fsdp_shards/ (rtune/shards.py); rank 0: config.json, and the consolidated HF model at the
               last checkpoint (or every one: trainer.save_hf_every_checkpoint). fsdp_state=full, and LoRA:
               rank 0: consolidated HF model or adapter + full optimizer state in trainer_state.pt
    deepspeed  every rank: its ZeRO shards under deepspeed/; rank 0: consolidated HF model (16-bit gather
               under ZeRO-3) or adapter. DeepSpeed's own helper scripts are removed: checkpoints hold no code.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import os
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from rtune import shards
from rtune.config import RTuneConfig, bf16_base
from rtune.errors import UserError
from rtune.model import apply_lora, cast_frozen, load_model_config
from rtune.model_init import load_adapter, materialize, unwrapped_name
from rtune.worker.lm import TokenLogprobs, hf_model
from rtune.worker.optim import build_optimizer, build_scheduler

_WRAPPER_PREFIX = "lm."  # TokenLogprobs holds the model as `lm`: strip it from wrapped state dicts


def _unwrapped_keys(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    return {k[len(_WRAPPER_PREFIX):] if k.startswith(_WRAPPER_PREFIX) else k: v for k, v in state_dict.items()}


def _cpu_copy(tree, memo: Optional[Dict[tuple, torch.Tensor]] = None,
              staging: Optional[Dict[tuple, torch.Tensor]] = None, path: tuple = ()):
    """A deep copy with every tensor copied to CPU memory (what a background checkpoint writes).

    Tensors that are one (tied embeddings and output head) stay one, so save_pretrained still writes it once.
    staging: the CPU buffers of the previous checkpoint by position in the tree, refilled in place when shape
    and dtype match (its write has finished by then): a checkpoint then costs the training thread one copy,
    not a fresh allocation of the whole state and the page faults of touching it (~1 GB for 87M parameters).
    """
    memo = {} if memo is None else memo
    if isinstance(tree, torch.Tensor):
        key = (tree.device, tree.data_ptr(), tree.dtype, tuple(tree.shape), tuple(tree.stride()))
        if key not in memo:
            kept = staging.get(path) if staging is not None else None
            if kept is not None and kept.shape == tree.shape and kept.dtype == tree.dtype:
                memo[key] = kept.copy_(tree.detach())
            else:
                memo[key] = tree.detach().to("cpu", copy=True)
                if staging is not None:
                    staging[path] = memo[key]
        return memo[key]
    if isinstance(tree, dict):
        return {k: _cpu_copy(v, memo, staging, path + (k,)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cpu_copy(v, memo, staging, path + (i,)) for i, v in enumerate(tree))
    return copy.deepcopy(tree)


class Strategy:
    """DDP (Ray's prepare_model) and the shared plumbing; subclasses change what differs."""

    #: Whether setup() takes a model built on the meta device and gives each rank its slices (FSDP2).
    loads_on_meta = False
    #: Whether peft.base_dtype=bf16 casts the frozen base here (DeepSpeed's bf16 mode keeps every weight in bf16).
    casts_frozen_base = True

    def __init__(self, cfg: RTuneConfig, rank: int, world_size: int, device: torch.device, grad_accum_steps: int):
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        self.grad_accum_steps = grad_accum_steps  # micro-batches per rank per step (DeepSpeed's config needs it)
        self.lora = cfg.peft.adapters
        self.model = None  # what the loop calls forward on: the wrapped TokenLogprobs
        self.raw = None  # the HF (or peft) model underneath any wrapper
        self._staging: Dict[str, Dict[tuple, torch.Tensor]] = {}  # CPU buffers background checkpoints reuse

    def model_init(self):
        """Context in which the model is built (ZeRO-3 builds it already partitioned)."""
        return contextlib.nullcontext()

    #: Sharded weights are gathered at every forward (a collective): generation must run in lockstep on all ranks.
    gathers_weights_in_forward = False

    @contextlib.contextmanager
    def for_generation(self):
        """The unwrapped model to generate with (the engine calls it with a KV cache, outside the loss wrapper)."""
        yield self.raw

    def trainable_weights(self) -> Optional[Dict[str, torch.Tensor]]:
        """Rank 0: every trainable parameter, whole, on the CPU (what RL's rollout actors are sent); others: None.
        A collective where parameters are sharded, so every rank calls it."""
        if self.rank != 0:
            return None
        return {name: p.detach().to("cpu", copy=True) for name, p in self.raw.named_parameters() if p.requires_grad}

    def _prepare(self, model, adapter_dir: Optional[str], new_token_ids: Sequence[int]):
        """LoRA (with the adapter of the checkpoint being resumed), and the log-prob view of the model."""
        self.raw = apply_lora(model, self.cfg.peft, new_token_ids) if self.lora else model
        if self.lora and adapter_dir is not None:
            _load_adapter(self.raw, adapter_dir)  # before any wrapper shards or copies the weights
        if bf16_base(self.cfg) and self.casts_frozen_base:  # the frozen base in bf16 (half its memory)
            cast_frozen(self.raw, torch.bfloat16)  # adapters stay fp32
        return TokenLogprobs(self.raw, self.cfg.trainer.logits_chunk_tokens)

    def setup(self, model, adapter_dir: Optional[str] = None, new_token_ids: Sequence[int] = ()) -> None:
        import ray.train.torch

        self.model = ray.train.torch.prepare_model(self._prepare(model, adapter_dir, new_token_ids))  # DDP
        self._build_optimizer()

    def reference_module(self, model):
        """A frozen, forward-only TokenLogprobs of `model` (DPO's live reference): a replica here."""
        module = TokenLogprobs(model.to(self.device), self.cfg.trainer.logits_chunk_tokens).eval()
        return module.requires_grad_(False)

    def _build_optimizer(self) -> None:
        self.optimizer = build_optimizer(self.raw, self.cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.cfg.trainer.max_steps, self.cfg.optim)

    def accumulating(self, is_last_micro_step: bool):
        """DDP all-reduces gradients on every backward unless told not to: only the last one syncs."""
        if is_last_micro_step or not hasattr(self.model, "no_sync"):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        if self.cfg.trainer.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.raw.parameters() if p.requires_grad],
                                           self.cfg.trainer.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, out_dir: str, with_hf: bool = True) -> Dict[str, Any]:
        """Write this rank's part of a checkpoint (a collective); returns state for trainer_state.pt.
        with_hf: whether a strategy that may leave it out (sharded FSDP) writes the consolidated HF model."""
        if self.rank == 0:
            self.raw.save_pretrained(out_dir, safe_serialization=True)  # full model, or adapter under LoRA
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def snapshot(self, with_hf: bool = True) -> Optional[Callable[[str], Dict[str, Any]]]:
        """For a background checkpoint: copy what `save` would write now (a collective), and return the function
        that writes the copy later, in another thread, while training changes the live weights (rank 0 writes
        the whole checkpoint). None: this strategy writes synchronously (DeepSpeed's engine saves its own
        partitions; sharded FSDP streams each rank's slices)."""
        if self.lora:  # an adapter is small: written here, copied to storage in the background
            return None
        if self.rank != 0:
            return self._writer(None, None, {})
        return self._writer(_cpu_copy(self.raw.state_dict(), staging=self._staging.setdefault("weights", {})),
                            _cpu_copy(self.optimizer.state_dict(), staging=self._staging.setdefault("optimizer", {})),
                            self.scheduler.state_dict())

    def _writer(self, weights, optimizer, scheduler) -> Callable[[str], Dict[str, Any]]:
        scheduler = copy.deepcopy(scheduler)

        def write(out_dir: str) -> Dict[str, Any]:
            if weights is not None:  # peft's save_pretrained keeps only the adapter of a full state dict
                self.raw.save_pretrained(out_dir, state_dict=_unwrapped_keys(weights), safe_serialization=True)
            return {"optimizer": optimizer, "scheduler": scheduler}
        return write

    def load(self, ckpt_dir: str, state: Dict[str, Any]) -> None:
        """Restore after setup(). Weights are in place already: full ones from the build, adapters from setup."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def _load_adapter(peft_model, ckpt_dir: str) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(peft_model, load_file(os.path.join(ckpt_dir, "adapter_model.safetensors")))


class FSDPStrategy(Strategy):
    """FSDP2: every transformer block is a shard unit; checkpoints gather a full state dict on rank 0."""

    def setup(self, model, adapter_dir: Optional[str] = None, new_token_ids: Sequence[int] = ()) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        on_meta = next(model.parameters()).device.type == "meta"  # built without memory: loaded after sharding
        module = self._prepare(model, None if on_meta else adapter_dir, new_token_ids)
        if not on_meta:
            module.to(self.device)
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        block_classes = set(getattr(hf_model(self.raw), "_no_split_modules", None) or [])
        for sub in module.modules():
            if type(sub).__name__ in block_classes:
                fully_shard(sub, mesh=mesh)  # under LoRA a unit mixes frozen and trainable weights: FSDP2 allows it
        fully_shard(module, mesh=mesh)  # the root unit: embeddings, final norm, output head
        if on_meta:  # each rank its slices: from the files, or the from-config initialisation replayed
            materialize(module, self.raw, self.device, model.rtune_weights_dir, self.lora, self.cfg.seed)
            if self.lora and adapter_dir is not None:
                load_adapter(self.raw, adapter_dir)
        self.model = module
        self._build_optimizer()

    @property
    def loads_on_meta(self) -> bool:
        return self.cfg.strategy.fsdp_load == "sharded"

    def base_state(self) -> Optional[Dict[str, torch.Tensor]]:
        """Rank 0: the frozen base's whole state under HF names (what a from-config LoRA run saves beside its
        adapter); others: None. A collective."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        weights = get_model_state_dict(self.model, options=self._full_state_options())
        if self.rank != 0:
            return None
        return {unwrapped_name(k): v for k, v in _unwrapped_keys(weights).items() if ".lora_" not in k}

    gathers_weights_in_forward = True

    @contextlib.contextmanager
    def for_generation(self):
        """The root unit (embeddings, final norm, head) gathered for the whole generation: the engine calls the
        model inside the wrapper, where only the blocks' own units gather and free their weights."""
        # FSDP2 initialises lazily from the first forward's module: make that the root, not a block the engine calls
        # first (online RL generates before any training forward)
        self.model._get_fsdp_state()._lazy_init()
        self.model.unshard()
        try:
            yield self.raw
        finally:
            self.model.reshard()

    def trainable_weights(self) -> Optional[Dict[str, torch.Tensor]]:
        out = {}
        for name, p in self.raw.named_parameters():
            if p.requires_grad:
                whole = p.full_tensor() if hasattr(p, "full_tensor") else p  # all ranks gather each DTensor
                if self.rank == 0:
                    out[name] = whole.detach().to("cpu", copy=True)
        return out if self.rank == 0 else None

    def reference_module(self, model):
        """Sharded like the policy: no rank holds the frozen copy whole."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        module = TokenLogprobs(model.to(self.device), self.cfg.trainer.logits_chunk_tokens).requires_grad_(False)
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        blocks = set(getattr(model, "_no_split_modules", None) or [])
        for sub in module.modules():
            if type(sub).__name__ in blocks:
                fully_shard(sub, mesh=mesh)
        fully_shard(module, mesh=mesh)
        return module.eval()

    def accumulating(self, is_last_micro_step: bool):
        self.model.set_requires_gradient_sync(is_last_micro_step)  # reduce-scatter only on the last one
        return contextlib.nullcontext()

    @property
    def sharded(self) -> bool:
        return self.cfg.strategy.fsdp_state == "sharded" and not self.lora  # adapters are small: gathered

    def _full_state_options(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def _gathered(self):
        """Full weights and optimizer state, gathered on rank 0 (collectives; other ranks get empty dicts)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        weights = get_model_state_dict(self.model, options=self._full_state_options())
        optimizer = get_optimizer_state_dict(self.model, self.optimizer, options=self._full_state_options())
        return weights, optimizer

    def save(self, out_dir: str, with_hf: bool = True) -> Dict[str, Any]:
        if self.sharded:
            return self._save_shards(out_dir, with_hf)
        weights, optimizer = self._gathered()
        if self.rank == 0:  # peft's save_pretrained keeps only the adapter of a full state dict
            self.raw.save_pretrained(out_dir, state_dict=_unwrapped_keys(weights), safe_serialization=True)
        return {"optimizer": optimizer, "scheduler": self.scheduler.state_dict()}

    def snapshot(self, with_hf: bool = True) -> Optional[Callable[[str], Dict[str, Any]]]:
        if self.sharded or self.lora:  # shards: written here from the live tensors (no copy), copied in background
            return None
        weights, optimizer = self._gathered()
        # Gathered copies on rank 0 (with one worker they may be the live CPU tensors themselves: copy).
        return self._writer(_cpu_copy(weights, staging=self._staging.setdefault("weights", {})) if self.rank == 0
                            else None,
                            _cpu_copy(optimizer, staging=self._staging.setdefault("optimizer", {})) if self.rank == 0
                            else None, self.scheduler.state_dict())

    def _save_shards(self, out_dir: str, with_hf: bool) -> Dict[str, Any]:
        """Every rank writes its own slices; nothing is gathered but the HF model when asked for."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        # The root unit keeps its parameters unsharded after a forward with no backward (the evaluation just
        # run): reshard, so the module's parameters are the optimizer's again.
        self.model.reshard()
        model_state = get_model_state_dict(self.model)
        optim_state = get_optimizer_state_dict(self.model, self.optimizer)
        shards.write(shards.flatten(_unwrapped_keys(model_state), optim_state), out_dir, self.rank)
        weights = get_model_state_dict(self.model, options=self._full_state_options()) if with_hf else None
        if self.rank == 0:
            if weights is not None:
                self.raw.save_pretrained(out_dir, state_dict=_unwrapped_keys(weights), safe_serialization=True)
            else:  # the architecture alone: resume and export build the model from it, then read the shards
                self.raw.config.save_pretrained(out_dir)
        return {"fsdp_shards": True, "optimizer_groups": optim_state["param_groups"],
                "scheduler": self.scheduler.state_dict()}

    def load(self, ckpt_dir: str, state: Dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                            get_optimizer_state_dict, set_model_state_dict,
                                                            set_optimizer_state_dict)

        if state.get("fsdp_shards"):  # each rank reads its slices of the weights and optimizer state
            model_state = get_model_state_dict(self.model)
            optim_state = get_optimizer_state_dict(self.model, self.optimizer)  # initialised, to be overwritten
            shards.load(shards.flatten(_unwrapped_keys(model_state), optim_state), ckpt_dir)
            set_model_state_dict(self.model, model_state)
            optim_state["param_groups"] = state["optimizer_groups"]
            set_optimizer_state_dict(self.model, self.optimizer, optim_state)
        else:  # rank 0 saved the full optimizer state; every rank reads the same file and keeps its shard
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        self.scheduler.load_state_dict(state["scheduler"])


class DeepSpeedStrategy(Strategy):
    """DeepSpeed ZeRO with a torch AdamW (no fused_adam/cpu_adam JIT builds) and our schedule."""

    casts_frozen_base = False  # trainer.precision=bf16 is DeepSpeed's bf16 mode: the engine holds bf16 weights

    @property
    def gathers_weights_in_forward(self) -> bool:  # ZeRO-3's hooks gather each module's partitions
        return self.cfg.strategy.zero_stage == 3

    def trainable_weights(self) -> Optional[Dict[str, torch.Tensor]]:
        import deepspeed

        params = [(name, p) for name, p in self.raw.named_parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters([p for _, p in params], enabled=self.cfg.strategy.zero_stage == 3):
            if self.rank != 0:
                return None
            return {name: p.detach().to("cpu", copy=True) for name, p in params}

    def ds_config(self) -> Dict[str, Any]:
        """Generated from the trainer settings: one source of truth for batch, clipping and precision."""
        t, s = self.cfg.trainer, self.cfg.strategy
        model_config = load_model_config(self.cfg.model)
        hidden = getattr(model_config, "hidden_size", None) or getattr(model_config, "n_embd", 1024)
        # Communication buckets sized by the model's width, as transformers' "auto" values do: DeepSpeed's
        # defaults (5e8 elements, 2 GB in fp32) are sized for large GPUs and dominate a small model's memory.
        zero: Dict[str, Any] = {"stage": s.zero_stage, "stage3_gather_16bit_weights_on_model_save": True,
                                "reduce_bucket_size": hidden * hidden, "allgather_bucket_size": hidden * hidden,
                                "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
                                "stage3_param_persistence_threshold": 10 * hidden}
        if s.offload_optimizer == "cpu":
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": self.device.type == "cuda"}
        config = {
            "train_micro_batch_size_per_gpu": t.micro_batch_size,
            "gradient_accumulation_steps": self.grad_accum_steps,
            "train_batch_size": t.micro_batch_size * self.grad_accum_steps * self.world_size,
            "bf16": {"enabled": t.precision == "bf16"},
            "zero_optimization": zero,
            "zero_allow_untested_optimizer": True,
            "zero_force_ds_cpu_optimizer": False,  # keep torch AdamW even with CPU offload
            "steps_per_print": 10 ** 9,
        }
        if t.max_grad_norm > 0:
            config["gradient_clipping"] = t.max_grad_norm
        return config

    @contextlib.contextmanager
    def model_init(self):
        """Under ZeRO-3, transformers builds the model inside deepspeed.zero.Init: no rank ever holds it whole."""
        if self.cfg.strategy.zero_stage == 3:
            import deepspeed
            from transformers.integrations import HfDeepSpeedConfig

            # Adopts Ray's process group: the ZeRO config needs the world size before the model exists.
            deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo")

            self._hf_ds_config = HfDeepSpeedConfig(self.ds_config())  # transformers keeps only a weak reference
        yield

    def setup(self, model, adapter_dir: Optional[str] = None, new_token_ids: Sequence[int] = ()) -> None:
        import deepspeed

        module = self._prepare(model, adapter_dir, new_token_ids)
        optimizer = build_optimizer(self.raw, self.cfg.optim)
        self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, optimizer=optimizer, config=self.ds_config(), dist_init_required=False,
            lr_scheduler=lambda opt: build_scheduler(opt, self.cfg.trainer.max_steps, self.cfg.optim))

    def reference_module(self, model):
        """ZeRO-3: an optimizer-less DeepSpeed engine, partitioned like the policy; ZeRO-1/2: a replica."""
        if self.cfg.strategy.zero_stage != 3:
            return super().reference_module(model)
        import deepspeed

        config = {k: v for k, v in self.ds_config().items() if k != "gradient_clipping"}
        engine, *_ = deepspeed.initialize(model=TokenLogprobs(model, self.cfg.trainer.logits_chunk_tokens),
                                          config=config, dist_init_required=False)
        engine.eval()  # DeepSpeedEngine.eval() returns None, unlike nn.Module.eval()
        return engine

    def accumulating(self, is_last_micro_step: bool):
        return contextlib.nullcontext()  # DeepSpeed skips the all-reduce until the boundary itself

    def backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss, scale_wrt_gas=False)  # already normalised over the whole step
        self.model.step()  # only at the accumulation boundary: clip, optimizer, schedule

    def step(self) -> None:
        pass

    def save(self, out_dir: str, with_hf: bool = True) -> Dict[str, Any]:
        shard_dir = os.path.join(out_dir, "deepspeed")
        self.model.save_checkpoint(shard_dir, tag="state", save_latest=False, exclude_frozen_parameters=self.lora)
        for script in glob.glob(os.path.join(shard_dir, "**", "*.py"), recursive=True):
            os.remove(script)  # zero_to_fp32.py & co: checkpoints are data, never code
        if self.cfg.strategy.zero_stage == 3:
            weights = self.model._zero3_consolidated_16bit_state_dict()  # a collective; rank 0 gets it
        else:
            weights = self.model.module.state_dict() if self.rank == 0 else None
        if self.rank == 0:
            self.raw.save_pretrained(out_dir, state_dict=_unwrapped_keys(weights), safe_serialization=True)
        return {}

    def snapshot(self, with_hf: bool = True) -> Optional[Callable[[str], Dict[str, Any]]]:
        return None  # the engine writes its partitions itself; async mode still uploads in the background

    def load(self, ckpt_dir: str, state: Dict[str, Any]) -> None:
        shard_dir = os.path.join(ckpt_dir, "deepspeed")
        verify_deepspeed_shards(shard_dir)
        path, _ = self.model.load_checkpoint(shard_dir, tag="state", load_module_strict=not self.lora)
        if path is None:
            raise RuntimeError(f"DeepSpeed found no shards in {shard_dir}")


def verify_deepspeed_shards(shard_dir: str) -> None:
    """DeepSpeed loads its shards with full unpickling; open each with weights_only=True first.

    Only tensors, containers and the few DeepSpeed/torch types its checkpoints hold are allowed, so
    a planted code payload is refused here before DeepSpeed ever unpickles the file.
    """
    safe = _deepspeed_safe_globals()
    for path in sorted(glob.glob(os.path.join(shard_dir, "**", "*.pt"), recursive=True)):
        try:
            with torch.serialization.safe_globals(safe):
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:
            raise UserError(f"refusing DeepSpeed shard {path}: not plain data ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:160]})") from None


def _deepspeed_safe_globals() -> list:
    from collections import OrderedDict, defaultdict

    allowed: list = [OrderedDict, defaultdict, dict, torch.Size]
    try:
        from deepspeed.runtime.fp16.loss_scaler import LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed += [ZeroStageEnum, LossScaler, fragment_address]
    except ImportError:
        pass
    return allowed


def make_strategy(cfg: RTuneConfig, rank: int, world_size: int, device: torch.device, grad_accum_steps: int
                  ) -> Strategy:
    """The strategy `strategy.name` names, for this rank of a group of world_size."""
    kinds = {"ddp": Strategy, "fsdp": FSDPStrategy, "deepspeed": DeepSpeedStrategy}
    return kinds[cfg.strategy.name](cfg, rank, world_size, device, grad_accum_steps)

