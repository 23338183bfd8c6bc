"""The sections for what happens around training: trackers, searches, evaluation, generation on the cluster, and
the debug switches tests and drills use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from rtune.config.checks import TRACKERS, _at_least_one, _one_of
from rtune.errors import UserError


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
