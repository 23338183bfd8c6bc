"""The sections that say what is trained and how: model, data, trainer, optimizer, PEFT, strategy, objective.

Each section's `check()` sits beside its fields and checks only its own keys; rules across sections are in
`schema.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from rtune.config.checks import (ENGINES, FORMATS, GRPO_LOSS_TYPES, LOSS_TYPES, OBJECTIVES, PACKINGS, PRECISIONS,
                                 SCHEDULES, TRAIN_ON, TRUNCATIONS, _at_least_one, _one_of)
from rtune.errors import UserError


@dataclass
class ModelConfig:
    """Which causal LM to fine-tune.

    Args:
        name_or_path: Hub id (`gpt2`) or local directory of any `AutoModelForCausalLM`; null builds
            a fresh model from `from_config` instead.
        from_config: Architecture of a model built from config with random weights (`model_type`
            plus its config fields, e.g. `n_layer`); used only when `name_or_path` is null.
        tokenizer: Hub id or directory of the tokenizer; null uses the model's own, or, for a model
            built from config, a byte-level BPE trained on the training data (cached).
        tokenizer_vocab_size: Vocabulary size of that trained BPE tokenizer.
        revision: Hub revision (branch, tag or commit) of `name_or_path`.
        trust_remote_code: Allow the hub repo's own Python code to run. Off unless you turn it on.
        attn_implementation: `sdpa`, `eager`, `flash_attention_2`, ... or null for the transformers
            default. Isolated packing is proven leak-free (tests) for eager and sdpa; flash-attention
            gets the batch as one flattened row so its variable-length kernels see the samples.
        suggested_lr: The peak learning rate a full fine-tune of this model uses when `optim.lr` is null.
        suggested_lora_lr: The same for LoRA (adapters want a ~10x larger step).
    """

    name_or_path: Optional[str] = None
    from_config: Dict[str, Any] = field(default_factory=dict)
    tokenizer: Optional[str] = None
    tokenizer_vocab_size: int = 4096
    revision: Optional[str] = None
    trust_remote_code: bool = False
    attn_implementation: Optional[str] = None
    suggested_lr: float = 1e-3
    suggested_lora_lr: float = 1e-2

    def check(self) -> None:
        if self.name_or_path is None and not self.from_config.get("model_type"):
            raise UserError("set model.name_or_path (hub id or local dir) or model.from_config.model_type")
        _at_least_one({"model.tokenizer_vocab_size": self.tokenizer_vocab_size})
        for key in ("suggested_lr", "suggested_lora_lr"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise UserError(f"model.{key} must be positive, got {value}")


@dataclass
class DataConfig:
    """What to train on, which tokens carry the loss, and how samples are packed into rows.

    Args:
        path: Hub dataset id, a local directory laid out like the hub repo, JSON/JSONL/Parquet
            file(s) (comma-separated), or `package:<name>` for a corpus shipped with rtune.
        data_dir: Sub-directory of the dataset to read (`data/rust` in the-stack-smol).
        format: `text` (raw documents), `chat` (message lists), `instruction` (Alpaca instruction /
            input / output), `prompt_completion` (prompt + completion strings), `preference`
            (prompt + chosen + rejected, for objective=dpo/orpo/simpo) or `prompt` (a `prompt`, string or
            messages, plus the columns the rewards read, for objective=grpo; benchmark files qualify).
        text_field: Column holding the text (format=text).
        messages_field: Column holding the conversation (format=chat); ShareGPT `conversations` with
            from/value is read too.
        chat_template: null: the tokenizer's own template (rtune's ChatML if it has none); or a name
            (`chatml`, `llama3`) or a path to a Jinja file. Saved with every checkpoint.
        train_on: Chat and instruction formats: `assistant` (every assistant turn, with its end-of-turn
            token), `last_assistant`, or `all` (every token).
        packing: `isolated` (whole samples per row by best-fit-decreasing, each attending only to
            itself), `concat` (samples stream into rows and may attend across boundaries) or `none`
            (one sample per row, padded). null: concat for format=text, isolated otherwise.
        truncation: A sample longer than seq_len (isolated / none packing): `drop` it, or `truncate`
            it to seq_len. The run log counts either.
        seq_len: Tokens per row.
        val_fraction: Share of records held out for validation (at least one); unused with eval_path.
        eval_path: A separate validation set (same kinds of path as `path`, same format); when set,
            nothing is held out of the training data.
        max_documents: Read at most this many records (null: all); handy for quick runs.
        cache_dir: Where tokenizers, tokenized and packed data are cached (keyed by content); this
            machine's disk (each node keeps its own: RTUNE_CACHE_DIR on that node overrides it).
        engine: Who prepares the data. `datasets`: the driver tokenizes and packs in one process (every
            format and packing). `ray`: Ray Data tokenizes the files in parallel across the cluster (a pool
            of tokenizer actors, one file or part of one per call) and writes token shards plus a manifest to
            `data.cache_uri`, where workers on any node read their rows; the driver's memory stays bounded
            whatever the corpus size. Raw text (concat): the `datasets` engine's rows; other formats
            (preference pairs too): the same samples, packed file by file.
        cache_uri: The `ray` engine's data cache: a directory every node mounts or a storage URI (s3://,
            gs://, file://). null: `<storage_path>/data_cache`. Workers copy a URI's shards to their node's
            cache_dir once.
    """

    path: str = "package:rust_sample"
    data_dir: Optional[str] = None
    format: str = "text"
    text_field: str = "content"
    messages_field: str = "messages"
    chat_template: Optional[str] = None
    train_on: str = "assistant"
    packing: Optional[str] = None
    truncation: str = "drop"
    seq_len: int = 256
    val_fraction: float = 0.05
    eval_path: Optional[str] = None
    max_documents: Optional[int] = None
    cache_dir: str = "~/.cache/rtune"
    engine: str = "datasets"
    cache_uri: Optional[str] = None

    def check(self) -> None:
        for key, value, choices in (("data.format", self.format, FORMATS), ("data.train_on", self.train_on, TRAIN_ON),
                                    ("data.truncation", self.truncation, TRUNCATIONS)):
            _one_of(key, value, choices)
        if self.packing is not None and self.packing not in PACKINGS:
            raise UserError(f"data.packing must be one of {', '.join(PACKINGS)} (or null: the format's default), "
                            f"got {self.packing!r}")
        if self.seq_len < 8:
            raise UserError(f"data.seq_len must be at least 8, got {self.seq_len}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"data.val_fraction must be between 0 and 1, got {self.val_fraction}")
        _one_of("data.engine", self.engine, ENGINES)
        if self.max_documents is not None and self.max_documents < 2:
            raise UserError("data.max_documents must be at least 2 (one to train on, one to validate)")


@dataclass
class TrainerConfig:
    """The training schedule. Steps are optimizer steps; batch sizes count sequences.

    Args:
        max_steps: Optimizer steps to train for.
        micro_batch_size: Sequences per worker per forward/backward pass.
        grad_accum_steps: Micro-batches accumulated per optimizer step (one all-reduce per step).
        global_batch_size: Sequences per optimizer step over all workers (null: num_workers x
            micro_batch_size x grad_accum_steps). When set, accumulation is derived from it and the worker
            count, so the batch (and the loss curve) stays the same when a run resumes or an elastic group
            resizes with another number of workers; it must divide by num_workers x micro_batch_size.
        eval_every_steps: Evaluate the validation loss every this many steps (and at the end).
        eval_max_batches: Cap on validation micro-batches per worker per evaluation (null: all).
        checkpoint_every_steps: Save and report a checkpoint every this many steps (and at the end).
        keep_checkpoints: Checkpoints Ray keeps: the best by `checkpoint_metric`, plus always the latest.
        checkpoint_metric: What "best" means among checkpoints: `eval_loss`, or any metric every checkpoint's
            evaluation logs (e.g. `eval_pass@1` with eval_generate_every_steps, DPO's `eval_reward_accuracy`).
        checkpoint_mode: `min` or `max` of checkpoint_metric.
        eval_generate_every_steps: Every this many steps (and at step 0 and the end) the workers generate
            `eval.samples` completions for `eval.max_tasks` tasks of `eval.benchmark` with their current model and
            the verifier scores them: logged as `eval_pass@1` (null: never).
        checkpoint_upload: `async` (training goes on while a checkpoint is copied to storage; Ray's
            CheckpointUploadMode.ASYNC) or `sync` (training waits for the copy). Either way a checkpoint
            counts only once every file has arrived (its marker lists them), so a run never resumes from
            a half-uploaded one.
        save_hf_every_checkpoint: FSDP with sharded state: also write the consolidated Hugging Face model
            (gathered on rank 0) into every checkpoint, not only the last (`rtune export` consolidates any
            checkpoint). Other strategies always write it.
        log_every_steps: Print progress and append to metrics.jsonl every this many steps.
        max_grad_norm: Clip the global gradient norm to this (0 disables clipping).
        precision: `fp32` or `bf16` (autocast; weights and optimizer state stay fp32).
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        max_failures: Worker-group restarts Ray Train may make before the run fails.
        logits_chunk_tokens: Tokens whose logits are computed at once in the loss (null: as many as
            keep one chunk's fp32 logits near 256 MB). A micro-batch's full logits never exist at once.
        skip_fit_check: Start even when the expected peak memory per worker exceeds what a worker has.
    """

    max_steps: int = 200
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    global_batch_size: Optional[int] = None
    eval_every_steps: int = 50
    eval_max_batches: Optional[int] = None
    checkpoint_every_steps: int = 100
    checkpoint_upload: str = "async"
    save_hf_every_checkpoint: bool = False
    keep_checkpoints: int = 2
    checkpoint_metric: str = "eval_loss"
    checkpoint_mode: str = "min"
    eval_generate_every_steps: Optional[int] = None
    log_every_steps: int = 10
    max_grad_norm: float = 1.0
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    max_failures: int = 0
    logits_chunk_tokens: Optional[int] = None
    skip_fit_check: bool = False

    def check(self) -> None:
        _at_least_one({f"trainer.{k}": getattr(self, k) for k in (
            "max_steps", "micro_batch_size", "grad_accum_steps", "eval_every_steps", "checkpoint_every_steps",
            "log_every_steps", "keep_checkpoints")})
        if self.logits_chunk_tokens is not None and self.logits_chunk_tokens < 1:
            raise UserError(f"trainer.logits_chunk_tokens must be at least 1 (or null: automatic), got "
                            f"{self.logits_chunk_tokens}")
        _one_of("trainer.checkpoint_upload", self.checkpoint_upload, ("sync", "async"), "sync or async")
        _one_of("trainer.precision", self.precision, PRECISIONS)
        _one_of("trainer.checkpoint_mode", self.checkpoint_mode, ("min", "max"), "min or max")
        if self.eval_generate_every_steps is not None and self.eval_generate_every_steps < 1:
            raise UserError(f"trainer.eval_generate_every_steps must be at least 1 (or null: never), got "
                            f"{self.eval_generate_every_steps}")
        if self.max_failures < 0 or self.max_grad_norm < 0:
            raise UserError("optim.warmup_steps, trainer.max_failures and trainer.max_grad_norm must be >= 0")
        if self.global_batch_size is not None:
            if self.global_batch_size < 1:
                raise UserError(f"trainer.global_batch_size must be at least 1 (or null), got {self.global_batch_size}")
            if self.grad_accum_steps != 1:
                raise UserError(f"set trainer.global_batch_size or trainer.grad_accum_steps, not both: accumulation is "
                                f"derived from the global batch (trainer.grad_accum_steps={self.grad_accum_steps})")


@dataclass
class OptimConfig:
    """AdamW with decoupled weight decay and a warmup + decay learning-rate schedule.

    Args:
        lr: Peak learning rate, reached after `warmup_steps`; null takes the model preset's suggestion
            (`model.suggested_lr`, or `model.suggested_lora_lr` with LoRA).
        weight_decay: Applied to matrices only (not to biases, norms or embeddings' positions).
        beta1: AdamW first-moment decay.
        beta2: AdamW second-moment decay.
        eps: AdamW epsilon.
        warmup_steps: Linear warmup from 0 to `lr`.
        schedule: `cosine`, `linear` or `constant` after warmup.
        min_lr_ratio: The decay ends at `lr * min_lr_ratio`.
    """

    lr: Optional[float] = None
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 20
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1

    def check(self) -> None:
        _one_of("optim.schedule", self.schedule, SCHEDULES)
        if self.lr is not None and self.lr <= 0:
            raise UserError(f"optim.lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0:
            raise UserError("optim.warmup_steps, trainer.max_failures and trainer.max_grad_norm must be >= 0")


@dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning (peft). `method=none` trains every weight.

    Args:
        method: `none`, `lora`, or `qlora` (LoRA over a frozen base quantized to 4-bit NF4 with bitsandbytes:
            double quantization, computed in bf16 under trainer.precision=bf16, else fp32; strategy=ddp).
        r: LoRA rank.
        alpha: LoRA scaling numerator (the update is scaled by alpha / r).
        dropout: Dropout on the LoRA branch.
        target_modules: Module names to adapt (a list), `all-linear` (every linear layer but the output
            head, as peft defines it), or null for the architecture's default: its attention and MLP
            projections (GPT-2: c_attn, c_proj, c_fc; Llama/Qwen/Mistral: q/k/v/o_proj, gate/up/down_proj).
        base_dtype: The frozen base's dtype under LoRA: `bf16` (half the memory; needs trainer.precision=bf16, whose
            autocast computes against it), `fp32`, or `auto` (bf16 when trainer.precision=bf16, else fp32). The
            adapters and their optimizer state stay fp32.
    """

    method: str = "none"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: Any = None  # a list of names, or the string "all-linear"
    base_dtype: str = "auto"

    def check(self) -> None:
        if self.method not in ("none", "lora", "qlora"):
            raise UserError(f"peft.method must be none, lora or qlora, got {self.method!r} (peft=lora and peft=qlora "
                            "pick the presets)")
        _one_of("peft.base_dtype", self.base_dtype, ("auto", "bf16", "fp32"), "auto, bf16 or fp32")
        if self.adapters and (self.r < 1 or self.alpha < 1 or not 0 <= self.dropout < 1):
            raise UserError("peft.r and peft.alpha must be at least 1 and peft.dropout in [0, 1)")
        targets = self.target_modules
        if not (targets is None or targets == "all-linear"
                or (isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) for t in targets))):
            raise UserError(f"peft.target_modules must be a list of module names, all-linear, or null (the "
                            f"architecture's default), got {targets!r}")

    @property
    def adapters(self) -> bool:
        """Whether only LoRA adapters train (lora and qlora): checkpoints hold the adapter, the base is rebuilt."""
        return self.method in ("lora", "qlora")

    @property
    def quantized(self) -> bool:
        """Whether the frozen base is 4-bit NF4 (qlora)."""
        return self.method == "qlora"


@dataclass
class StrategyConfig:
    """How the model is spread over workers.

    Args:
        name: `ddp` (replicas, Ray's prepare_model), `fsdp` (FSDP2 fully_shard: parameters, gradients and
            optimizer state sharded) or `deepspeed` (ZeRO).
        zero_stage: DeepSpeed ZeRO stage: 1 shards optimizer state, 2 also gradients, 3 also parameters.
        offload_optimizer: DeepSpeed only: `none`, or `cpu` to keep optimizer state in host memory.
        fsdp_state: FSDP only: `sharded` (every rank writes and reads only its own shards of the weights and
            optimizer state, torch.distributed.checkpoint's safetensors layout; a run may resume with another
            worker count) or `full` (gathered on rank 0 at every checkpoint). LoRA adapters are small and
            always gathered.
        fsdp_load: FSDP only: `sharded` (the model is built on the meta device, sharded, then each rank reads or
            initialises only its own slices: no rank holds it whole) or `whole` (every rank builds the whole model
            first, then shards it: a fallback, and the baseline of scripts/bench/load.py).
    """

    name: str = "ddp"
    zero_stage: int = 2
    offload_optimizer: str = "none"
    fsdp_state: str = "sharded"
    fsdp_load: str = "sharded"

    def check(self) -> None:
        if self.name not in ("ddp", "fsdp", "deepspeed"):
            raise UserError(f"strategy.name must be ddp, fsdp or deepspeed, got {self.name!r} (strategy=<name>)")
        if self.zero_stage not in (1, 2, 3):
            raise UserError(f"strategy.zero_stage must be 1, 2 or 3, got {self.zero_stage}")
        if self.offload_optimizer not in ("none", "cpu"):
            raise UserError(f"strategy.offload_optimizer must be none or cpu, got {self.offload_optimizer!r}")
        if self.offload_optimizer == "cpu" and self.name != "deepspeed":
            raise UserError("strategy.offload_optimizer=cpu needs strategy=deepspeed")
        if self.fsdp_state not in ("sharded", "full"):
            raise UserError(f"strategy.fsdp_state must be sharded or full, got {self.fsdp_state!r}")
        if self.fsdp_load not in ("sharded", "whole"):
            raise UserError(f"strategy.fsdp_load must be sharded or whole, got {self.fsdp_load!r}")


@dataclass
class ObjectiveConfig:
    """What the loss is. `sft` (cross-entropy on the target tokens), a preference objective on
    `data.format=preference` pairs: `dpo` (against a reference model), `orpo` and `simpo` (no reference), or `grpo`:
    online RL from rewards on `data.format=prompt` (groups of sampled completions per prompt; see docs/rl.md).

    Args:
        name: `sft`, `dpo`, `orpo`, `simpo` or `grpo` (objective=<name> picks the preset with its defaults).
        beta: DPO: strength of the KL pull to the reference (0.1); SimPO: reward scale (2.0); GRPO: weight of the
            k3 KL estimate to the reference per completion token (0: no reference is loaded).
        loss_type: DPO: `sigmoid` (the paper's), `ipo` (squared, on length-averaged log-ratios) or `hinge`.
            GRPO's token aggregation: `dapo` (one mean over every completion token of the step, all ranks),
            `grpo` (each completion's mean, then the mean over completions: length-biased) or `dr_grpo` (the sum
            over tokens divided by completions x rollout.max_new_tokens, a constant).
        label_smoothing: Probability that a pair's preference is flipped (conservative DPO / SimPO), in [0, 0.5).
        sft_weight: Weight of an added cross-entropy term on the chosen reply (DPO, SimPO; 0: none).
        gamma: SimPO's target reward margin.
        orpo_lambda: ORPO: weight of the odds-ratio term added to the chosen reply's cross-entropy.
        reference: DPO without LoRA: `precompute` (one pass of the initial model over the pairs before step
            1, cached by model and data and stored in checkpoints) or `live` (a frozen copy sharded like the
            policy). With LoRA the reference is the same model with its adapters disabled. GRPO's reference
            (beta > 0) is always live.
        num_generations: GRPO: completions sampled per prompt (the group its advantages compare within).
        epsilon_low: GRPO: the ratio is clipped below at 1 - epsilon_low.
        epsilon_high: GRPO: ... and above at 1 + epsilon_high (DAPO's clip-higher: 0.28).
        scale_rewards: GRPO: `group` divides each advantage by its group's reward std; `none` does not (Dr. GRPO).
        advantage: GRPO: `group` (reward minus the group's mean) or `rloo` (minus the mean of the other
            completions of the prompt).
        mask_truncated_completions: GRPO: completions cut by rollout.max_new_tokens carry no loss (DAPO).
    """

    name: str = "sft"
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    sft_weight: float = 0.0
    gamma: float = 0.5
    orpo_lambda: float = 0.1
    reference: str = "precompute"
    num_generations: int = 8
    epsilon_low: float = 0.2
    epsilon_high: float = 0.28
    scale_rewards: str = "group"
    advantage: str = "group"
    mask_truncated_completions: bool = False

    def check(self) -> None:
        _one_of("objective.name", self.name, OBJECTIVES, suffix=" (objective=<name>)")
        _one_of("objective.reference", self.reference, ("precompute", "live"), "precompute or live")
        if self.name == "grpo":
            self._check_grpo()
            return
        _one_of("objective.loss_type", self.loss_type, LOSS_TYPES)
        if self.beta <= 0 or self.orpo_lambda < 0 or self.sft_weight < 0:
            raise UserError(f"objective.beta must be positive (got {self.beta}) and objective.orpo_lambda and "
                            f"objective.sft_weight at least 0")
        if not 0 <= self.label_smoothing < 0.5:
            raise UserError(f"objective.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")

    def _check_grpo(self) -> None:
        _one_of("objective.loss_type", self.loss_type, GRPO_LOSS_TYPES, suffix=" (objective=grpo's aggregation)")
        _one_of("objective.scale_rewards", self.scale_rewards, ("group", "none"), "group or none")
        _one_of("objective.advantage", self.advantage, ("group", "rloo"), "group or rloo")
        if self.num_generations < 2:
            raise UserError(f"objective.num_generations must be at least 2 (a group compares its completions), got "
                            f"{self.num_generations}")
        if self.beta < 0 or not 0 <= self.epsilon_low < 1 or self.epsilon_high < 0:
            raise UserError(f"objective.beta must be >= 0 (got {self.beta}), objective.epsilon_low in [0, 1) (got "
                            f"{self.epsilon_low}) and objective.epsilon_high >= 0 (got {self.epsilon_high})")
