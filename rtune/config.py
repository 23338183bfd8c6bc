"""The typed configuration schema: one source of truth for Hydra, validation and the workers.

The dataclasses below are registered in Hydra's ConfigStore as `rtune_schema`; `conf/config.yaml`
lists it first in its defaults, so every group file (`conf/model/*.yaml`, ...) and every command-line
override is merged into a typed node: an unknown key or a wrong type fails at composition. The
driver then runs `validate()` for the rules a type cannot express, and workers receive the resolved
config as a plain dict (`to_dict`) and rebuild the dataclasses with `from_dict`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from rtune.errors import UserError


RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")
PRECISIONS = ("fp32", "bf16")
FORMATS = ("text", "chat", "instruction", "prompt_completion", "preference")
TRAIN_ON = ("assistant", "last_assistant", "all")
PACKINGS = ("concat", "isolated", "none")
ENGINES = ("datasets", "ray")
TRUNCATIONS = ("drop", "truncate")
OBJECTIVES = ("sft", "dpo", "orpo", "simpo")
LOSS_TYPES = ("sigmoid", "ipo", "hinge")
TRACKERS = ("tensorboard", "mlflow", "wandb")
SCHEDULES = ("cosine", "linear", "constant")


def _one_of(key: str, value: Any, choices: Tuple[str, ...], words: Optional[str] = None, suffix: str = "") -> None:
    if value not in choices:
        raise UserError(f"{key} must be {words or 'one of ' + ', '.join(choices)}, got {value!r}{suffix}")


def _at_least_one(values: Dict[str, int]) -> None:
    for key, value in values.items():
        if value < 1:
            raise UserError(f"{key} must be at least 1, got {value}: set {key}=1 or more")


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
            input / output), `prompt_completion` (prompt + completion strings) or `preference`
            (prompt + chosen + rejected, for objective=dpo/orpo/simpo).
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
        method: `none` or `lora`.
        r: LoRA rank.
        alpha: LoRA scaling numerator (the update is scaled by alpha / r).
        dropout: Dropout on the LoRA branch.
        target_modules: Module names to adapt (a list), `all-linear` (every linear layer but the output
            head, as peft defines it), or null for the architecture's default: its attention and MLP
            projections (GPT-2: c_attn, c_proj, c_fc; Llama/Qwen/Mistral: q/k/v/o_proj, gate/up/down_proj).
    """

    method: str = "none"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: Any = None  # a list of names, or the string "all-linear"

    def check(self) -> None:
        if self.method not in ("none", "lora"):
            raise UserError(f"peft.method must be none or lora, got {self.method!r} (peft=lora picks the LoRA preset)")
        if self.method == "lora" and (self.r < 1 or self.alpha < 1 or not 0 <= self.dropout < 1):
            raise UserError("peft.r and peft.alpha must be at least 1 and peft.dropout in [0, 1)")
        targets = self.target_modules
        if not (targets is None or targets == "all-linear"
                or (isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) for t in targets))):
            raise UserError(f"peft.target_modules must be a list of module names, all-linear, or null (the "
                            f"architecture's default), got {targets!r}")


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
    """

    name: str = "ddp"
    zero_stage: int = 2
    offload_optimizer: str = "none"
    fsdp_state: str = "sharded"

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


@dataclass
class DebugConfig:
    """Deterministic fault injection, for tests and drills.

    Args:
        fail_at_step: Kill the worker process of rank `fail_rank` right after this step's
            checkpoint/report, once per run (a marker file in the run directory says it happened).
        fail_rank: Which rank dies.
        record_rows: Every rank appends the packed-row indices it trains at each step to
            `<run>/rows_rank<N>.jsonl` (proves the global sample order in tests).
        upload_delay_s: Async uploads copy a checkpoint file by file, marker first, pausing this long after
            each, and fail_at_step kills its rank once the marker has arrived: a worker lost mid-upload
            (tests). 0: Ray's own upload, and fail_at_step waits for the upload to finish.
        step_delay_s: Every rank pauses this long after each optimizer step: a tiny model trained at a real
            model's pace, so a scheduler's decision (ASHA) lands while the run still trains (tests).
    """

    fail_at_step: Optional[int] = None
    fail_rank: int = 0
    record_rows: bool = False
    upload_delay_s: float = 0.0
    step_delay_s: float = 0.0

    def check(self) -> None:
        for key in ("upload_delay_s", "step_delay_s"):
            if getattr(self, key) < 0:
                raise UserError(f"debug.{key} must be >= 0 seconds, got {getattr(self, key)}")


@dataclass
class ObjectiveConfig:
    """What the loss is. `sft` (cross-entropy on the target tokens) or a preference objective on
    `data.format=preference` pairs: `dpo` (against a reference model), `orpo` and `simpo` (no reference).

    Args:
        name: `sft`, `dpo`, `orpo` or `simpo` (objective=<name> picks the preset with its defaults).
        beta: DPO: strength of the KL pull to the reference (0.1); SimPO: reward scale (2.0).
        loss_type: DPO: `sigmoid` (the paper's), `ipo` (squared, on length-averaged log-ratios) or `hinge`.
        label_smoothing: Probability that a pair's preference is flipped (conservative DPO / SimPO), in [0, 0.5).
        sft_weight: Weight of an added cross-entropy term on the chosen reply (DPO, SimPO; 0: none).
        gamma: SimPO's target reward margin.
        orpo_lambda: ORPO: weight of the odds-ratio term added to the chosen reply's cross-entropy.
        reference: DPO without LoRA: `precompute` (one pass of the initial model over the pairs before step
            1, cached by model and data and stored in checkpoints) or `live` (a frozen copy sharded like the
            policy). With LoRA the reference is the same model with its adapters disabled.
    """

    name: str = "sft"
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    sft_weight: float = 0.0
    gamma: float = 0.5
    orpo_lambda: float = 0.1
    reference: str = "precompute"

    def check(self) -> None:
        _one_of("objective.name", self.name, OBJECTIVES, suffix=" (objective=<name>)")
        _one_of("objective.loss_type", self.loss_type, LOSS_TYPES)
        _one_of("objective.reference", self.reference, ("precompute", "live"), "precompute or live")
        if self.beta <= 0 or self.orpo_lambda < 0 or self.sft_weight < 0:
            raise UserError(f"objective.beta must be positive (got {self.beta}) and objective.orpo_lambda and "
                            f"objective.sft_weight at least 0")
        if not 0 <= self.label_smoothing < 0.5:
            raise UserError(f"objective.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


@dataclass
class TrackingConfig:
    """Experiment trackers rank 0 reports to, at the same moments as metrics.jsonl (see docs/tracking.md).

    Args:
        backends: Any of `tensorboard` (event files in <run_dir>/tensorboard), `mlflow` and `wandb`, e.g.
            `tracking.backends=[tensorboard,mlflow]`; `[]` turns tracking off.
        project: MLflow experiment / W&B project (null: the sweep's name, else `rtune`).
        mlflow_uri: MLflow tracking URI (null: $MLFLOW_TRACKING_URI, else a SQLite store
            <storage_path>/mlflow.db with artifacts beside it; `mlflow ui --backend-store-uri` that URI).
        wandb_mode: `online` or `offline` (null: $WANDB_MODE, else online).
        log_model: Also upload the best checkpoint's files as an artifact (MLflow, W&B); off: never the weights.
    """

    backends: List[str] = field(default_factory=lambda: ["tensorboard"])
    project: Optional[str] = None
    mlflow_uri: Optional[str] = None
    wandb_mode: Optional[str] = None
    log_model: bool = False

    def check(self) -> None:
        unknown = [b for b in self.backends if b not in TRACKERS]
        if unknown or len(set(self.backends)) != len(self.backends):
            raise UserError(f"tracking.backends must be a list of distinct trackers from {', '.join(TRACKERS)} (or "
                            f"[]), got {list(self.backends)}: e.g. tracking.backends=[tensorboard,mlflow]")
        if self.wandb_mode not in (None, "online", "offline"):
            raise UserError(f"tracking.wandb_mode must be online or offline (or null: $WANDB_MODE), got "
                            f"{self.wandb_mode!r}")


@dataclass
class EvalConfig:
    """Evaluation that runs the code a model writes: `rtune eval`, and trainer.eval_generate_every_steps.

    Args:
        benchmark: `rust_eval` (bundled: 155 Rust tasks with tests) or a JSONL file of tasks with task_id, prompt,
            test, entry_point and optional canonical_solution (HumanEval / MultiPL-E fields).
        verifier: How a completion is scored: `rust_tests` (build and run the task's tests in the sandbox),
            `rust_compiles`, `exact_match` (field answer), `regex` (field pattern) or a function pkg.module:function
            taking (prompt, completion, **columns) and returning a score.
        samples: Completions per task (the n of pass@k).
        k: The k of each pass@k to report (each at most samples).
        temperature: Sampling temperature (0: greedy, the same completion every sample).
        top_p: Nucleus sampling (1: off).
        max_new_tokens: Tokens per completion at most.
        max_tasks: Only the first this many tasks (null: all).
        prompt_style: `completion` (the code prefix, continued up to the function's closing brace) or `chat` (the
            task as a user turn with the model's chat template; the code taken from the reply).
        timeout_s: Wall-clock seconds a check's tests may run (as MultiPL-E: 5); compiling has its own limit.
        seed: Sampling seed (the same seed gives the same completions).
        harness: null (the benchmark above) or `lm_eval` (EleutherAI's lm-evaluation-harness on `tasks`).
        tasks: lm-evaluation-harness task names, or paths of task YAML files (harness=lm_eval).
    """

    benchmark: str = "rust_eval"
    verifier: str = "rust_tests"
    samples: int = 1
    k: List[int] = field(default_factory=lambda: [1])
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    max_tasks: Optional[int] = None
    prompt_style: str = "completion"
    timeout_s: float = 5.0
    seed: int = 0
    harness: Optional[str] = None
    tasks: List[str] = field(default_factory=list)

    def check(self) -> None:
        _at_least_one({"eval.samples": self.samples, "eval.max_new_tokens": self.max_new_tokens})
        if self.max_tasks is not None and self.max_tasks < 1:
            raise UserError(f"eval.max_tasks must be at least 1 (or null: all), got {self.max_tasks}")
        if not self.k or any(not isinstance(k, int) or k < 1 or k > self.samples for k in self.k):
            raise UserError(f"eval.k={list(self.k)} must list whole numbers from 1 to eval.samples={self.samples}: "
                            f"e.g. k=[1] or samples={max([k for k in self.k if isinstance(k, int)] or [1])}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError(f"eval.temperature must be >= 0 (got {self.temperature}) and eval.top_p in (0, 1] "
                            f"(got {self.top_p})")
        _one_of("eval.prompt_style", self.prompt_style, ("completion", "chat"), "completion or chat")
        if self.timeout_s <= 0:
            raise UserError(f"eval.timeout_s must be positive, got {self.timeout_s}")
        if self.harness not in (None, "lm_eval"):
            raise UserError(f"eval.harness must be lm_eval or null, got {self.harness!r}")
        if self.harness == "lm_eval" and not self.tasks:
            raise UserError("eval.harness=lm_eval needs eval.tasks=[...] (lm-evaluation-harness task names)")


@dataclass
class GenerationConfig:
    """How generation runs on the cluster (`rtune generate prompts=...`, `rtune eval`).

    Args:
        backend: `transformers` (CPU and GPU; batched prompts with a KV cache) or `vllm` (GPU; install
            `rtune[vllm]`; LoRA checkpoints are served as adapters).
        max_batch_size: Sequences (prompts x samples) one engine decodes together.
        num_actors: Engine actors (null: one per GPU with use_gpu, else one per cpus_per_actor CPUs on offer).
        cpus_per_actor: CPU cores each engine actor reserves (its torch threads).
        shard_size: Prompts per output shard: what a re-run finds finished and skips.
        vllm_gpu_memory_utilization: The share of each GPU vLLM may take (backend=vllm).
    """

    backend: str = "transformers"
    max_batch_size: int = 16
    num_actors: Optional[int] = None
    cpus_per_actor: int = 1
    shard_size: int = 16
    vllm_gpu_memory_utilization: float = 0.85

    def check(self) -> None:
        _one_of("generation.backend", self.backend, ("transformers", "vllm"), "transformers or vllm")
        _at_least_one({"generation.max_batch_size": self.max_batch_size, "generation.cpus_per_actor":
                       self.cpus_per_actor, "generation.shard_size": self.shard_size})
        if self.num_actors is not None and self.num_actors < 1:
            raise UserError(f"generation.num_actors must be at least 1 (or null: from the resources), got "
                            f"{self.num_actors}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise UserError(f"generation.vllm_gpu_memory_utilization must be in (0, 1], got "
                            f"{self.vllm_gpu_memory_utilization}")


@dataclass
class SearchConfig:
    """Ray Tune search, used by `python -m rtune tune` (ignored by `train`).

    Args:
        space: Dotted config key -> distribution, e.g. `{optim.lr: "loguniform(1e-5,1e-3)", peft.r: "choice(8,16)"}`.
            Distributions: `loguniform(lo,hi)`, `uniform(lo,hi)`, `randint(lo,hi)` (hi excluded),
            `choice(a,b,...)` (sampled) and `grid(a,b,...)` (every value, each `num_samples` times).
        num_samples: Trials to sample (times the product of the grid sizes).
        max_concurrent: Trials running at once; each needs num_workers x cpus_per_worker CPUs (and GPUs).
        scheduler: `asha` (stop the weaker trials at rungs of grace_period_steps x reduction_factor^k) or
            `fifo` (every trial runs to trainer.max_steps).
        metric: Reported metric the search optimises; evaluations report it every trainer.eval_every_steps.
        mode: `min` or `max` of `metric`.
        grace_period_steps: ASHA: steps every trial runs before it may be stopped (null: 2 evaluations).
        reduction_factor: ASHA: 1 in reduction_factor trials goes on at each rung.
        seed: Seed of the sampler: the same search samples the same trials.
    """

    space: Dict[str, str] = field(default_factory=dict)
    num_samples: int = 8
    max_concurrent: int = 2
    scheduler: str = "asha"
    metric: str = "eval_loss"
    mode: str = "min"
    grace_period_steps: Optional[int] = None
    reduction_factor: int = 2
    seed: int = 0


@dataclass
class RTuneConfig:
    """Everything one `rtune train` run needs.

    Args:
        num_workers: Ray Train workers (one process each; one GPU each with `use_gpu`), or `[min, max]` for an
            elastic group: Ray starts as many as the cluster fits, continues with fewer (at least min) from the
            newest checkpoint after a worker or node is lost, and grows again when resources return
            (needs trainer.max_failures > 0; ddp or fsdp).
        use_gpu: Train on GPUs (NCCL) instead of CPUs (gloo).
        cpus_per_worker: CPU cores Ray reserves for each worker, also its torch thread count: an integer, or
            `auto` (the node's cores divided among the workers on a local cluster, what the nodes offer
            per worker on a joined one; at least 1, printed at start).
        run_name: Name of the run directory; re-running with the same name resumes. Null makes a
            fresh, unique name.
        storage_path: Where runs are written: a local directory or a URI Ray storage accepts.
        seed: Seed for model init, data order and dropout.
        ray_address: Ray cluster to join (`auto`, `ray://...`); null starts a local one unless
            `RAY_ADDRESS` is set.
        gpu_memory_gb: Memory of one GPU, for the fit check before launch (null: the driver's own GPU if it
            has one; otherwise GPU runs are not checked).
        sweep_name: Multirun and tune: the directory under storage_path holding every run of a sweep.
            Null derives a stable name from the sweep's arguments, so re-running a sweep skips the runs
            that finished and resumes the others.
        search: Ray Tune search space and scheduler (`python -m rtune tune`).
        tracking: Experiment trackers (TensorBoard, MLflow, W&B).
        eval: Evaluation by running generated code (`rtune eval`, trainer.eval_generate_every_steps).
        generation: Generation on the cluster: backend, batch, engine actors (`rtune generate`, `rtune eval`).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    num_workers: Any = 2  # an integer, or [min, max] (elastic)
    use_gpu: bool = False
    cpus_per_worker: Any = "auto"  # an integer, or "auto"
    run_name: Optional[str] = None
    storage_path: str = "results"
    seed: int = 1234
    ray_address: Optional[str] = None
    sweep_name: Optional[str] = None
    gpu_memory_gb: Optional[float] = None

    def check(self) -> None:
        """This section's own keys (the run's top level)."""
        lo, hi = worker_range(self)
        if lo > hi:
            raise UserError(f"num_workers=[{lo},{hi}]: the minimum comes first, e.g. num_workers=[{hi},{lo}]")
        _at_least_one({"num_workers": lo})
        cpus = self.cpus_per_worker
        if cpus != "auto" and (isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1):
            raise UserError(f"cpus_per_worker must be a whole number of cores (at least 1) or auto, got {cpus!r}")
        for key in ("run_name", "sweep_name"):
            value = getattr(self, key)
            if value is not None and not RUN_NAME.match(value):
                raise UserError(f"{key} {value!r} may hold only letters, digits and . _ = , + -")


def register_schema() -> None:
    """Register the schema with Hydra so `conf/config.yaml` can list `rtune_schema` first."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="rtune_schema", node=RTuneConfig)


def is_uri(path: str) -> bool:
    """True for storage URIs (`s3://`, `gs://`, ...), which stay as they are."""
    return "://" in path


def worker_range(cfg: RTuneConfig) -> Tuple[int, int]:
    """(min, max) workers: equal for a fixed group, `num_workers=[min,max]` for an elastic one."""
    n = cfg.num_workers
    if isinstance(n, int) and not isinstance(n, bool):
        return n, n
    if (isinstance(n, (list, tuple)) and len(n) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in n)):
        return int(n[0]), int(n[1])
    raise UserError(f"num_workers must be a whole number or [min, max] (an elastic group), got {n!r}: e.g. "
                    "num_workers=2 or num_workers=[1,4]")


def max_workers(cfg: RTuneConfig) -> int:
    return worker_range(cfg)[1]


def validate(cfg: RTuneConfig) -> None:
    """Check what types cannot, on the driver before anything starts: each section its own keys (`check()` beside
    its fields), then the rules that span sections. Raises UserError naming the fix."""
    cfg.check()
    for section in (cfg.model, cfg.data, cfg.trainer, cfg.optim, cfg.peft, cfg.strategy, cfg.debug, cfg.objective,
                    cfg.tracking, cfg.eval, cfg.generation):
        section.check()
    _rules_across_sections(cfg)


def _rules_across_sections(cfg: RTuneConfig) -> None:
    """Settings of one section that another section's settings rule out."""
    d, ob, t = cfg.data, cfg.objective, cfg.trainer
    lo, hi = worker_range(cfg)
    preference_objective = ob.name != "sft"
    if preference_objective and d.format != "preference":
        raise UserError(f"objective={ob.name} learns from preference pairs, but data.format={d.format}: use "
                        "data.format=preference (prompt / chosen / rejected records, e.g. data=rust_preference), "
                        "or objective=sft for this data")
    if not preference_objective and d.format == "preference":
        raise UserError("data.format=preference holds pairs for a preference objective: use objective=dpo, "
                        "objective=orpo or objective=simpo (objective=sft trains on chat, instruction, "
                        "prompt_completion or text data)")
    if d.format == "preference" and (d.packing or "isolated") != "isolated":
        raise UserError("preference pairs need data.packing=isolated (or null): chosen and rejected share a row "
                        "without seeing each other")
    if cfg.debug.fail_at_step is not None and not 0 <= cfg.debug.fail_rank < hi:
        raise UserError(f"debug.fail_rank must be in [0, {hi - 1}]")
    if lo != hi and cfg.strategy.name == "deepspeed":
        raise UserError("an elastic group (num_workers=[min,max]) needs strategy=ddp or strategy=fsdp: DeepSpeed "
                        "ZeRO checkpoints are partitioned per worker and resume only with the same count")
    if lo != hi and t.max_failures < 1:
        raise UserError(f"num_workers=[{lo},{hi}] resizes the group after a failure: set "
                        "trainer.max_failures=1 or more (e.g. trainer.max_failures=3)")
    g = t.eval_generate_every_steps
    if t.checkpoint_metric == "eval_pass@1" and (g is None or t.checkpoint_every_steps % g):
        raise UserError(f"trainer.checkpoint_metric=eval_pass@1 ranks checkpoints by a metric measured every "
                        f"trainer.eval_generate_every_steps={g} steps: set it to a divisor of "
                        f"trainer.checkpoint_every_steps={t.checkpoint_every_steps} (e.g. "
                        f"trainer.eval_generate_every_steps={t.checkpoint_every_steps})")
    _check_global_batch(cfg)


def _check_global_batch(cfg: RTuneConfig) -> None:
    """trainer.global_batch_size splits evenly over every worker count the group may have."""
    gbs, micro = cfg.trainer.global_batch_size, cfg.trainer.micro_batch_size
    if gbs is None:
        return
    lo, hi = worker_range(cfg)
    counts = range(lo, hi + 1)
    if all(gbs % (w * micro) == 0 for w in counts):
        return
    unit = math.lcm(*(w * micro for w in counts))
    near = max(unit, round(gbs / unit) * unit)
    micros = [m for m in range(1, micro + 1) if all(gbs % (w * m) == 0 for w in counts)]
    workers = f"num_workers={lo}" if lo == hi else f"every worker count in num_workers=[{lo},{hi}]"
    raise UserError(f"trainer.global_batch_size={gbs} must be a multiple of num_workers x trainer.micro_batch_size "
                    f"for {workers}: use trainer.global_batch_size={near} (a multiple of {unit})"
                    + (f" or trainer.micro_batch_size={micros[-1]}" if micros else ""))


def to_dict(cfg: RTuneConfig) -> Dict[str, Any]:
    """The plain dict that travels to workers and into checkpoints."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def from_dict(raw: Dict[str, Any]) -> RTuneConfig:
    """Rebuild the typed config from `to_dict`'s output (type-checked again)."""
    merged = OmegaConf.merge(OmegaConf.structured(RTuneConfig), raw)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]

