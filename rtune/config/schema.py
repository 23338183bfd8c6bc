"""The whole schema (`RTuneConfig`), its validation (each section's checks, then the rules across sections), and
the plain dict that travels to workers and into checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from rtune.config.checks import PREFERENCE_OBJECTIVES, RUN_NAME, _at_least_one
from rtune.config.operations import DebugConfig, EvalConfig, GenerationConfig, SearchConfig, TrackingConfig
from rtune.config.rl import RolloutConfig
from rtune.config.serving import ServeConfig
from rtune.config.training import (DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, PeftConfig, StrategyConfig,
                                   TrainerConfig)
from rtune.errors import UserError


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
        rollout: objective=grpo's rollouts: engine, sampling, actors, reward timeout.
        serve: `rtune serve`: replicas, batching, limits, host, port and the API key's variable.
        rewards: objective=grpo's reward functions: `rust_tests`, `rust_compiles`, `exact_match`, `regex`, or a
            function as `pkg.module:function` (per sample `f(prompt, completion, **columns) -> float`, or TRL's
            batched `f(prompts, completions, **columns) -> list of floats`). Logged as reward_<name>.
        reward_weights: One weight per reward (null: all 1); the reward is their weighted sum.
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
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    rewards: List[str] = field(default_factory=list)
    reward_weights: Optional[List[float]] = None
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


def bf16_base(cfg: RTuneConfig) -> bool:
    """Whether the frozen base of plain LoRA is kept in bf16 (peft.base_dtype, `auto` resolved). QLoRA's base is 4-bit
    NF4 (its few unquantized tensors in the compute dtype): not this."""
    p = cfg.peft
    return p.method == "lora" and (p.base_dtype == "bf16" or (p.base_dtype == "auto"
                                                               and cfg.trainer.precision == "bf16"))


def validate(cfg: RTuneConfig) -> None:
    """Check what types cannot, on the driver before anything starts: each section its own keys (`check()` beside
    its fields), then the rules that span sections. Raises UserError naming the fix."""
    cfg.check()
    for section in (cfg.model, cfg.data, cfg.trainer, cfg.optim, cfg.peft, cfg.strategy, cfg.debug, cfg.objective,
                    cfg.tracking, cfg.eval, cfg.generation, cfg.rollout, cfg.serve):
        section.check()
    _rules_across_sections(cfg)


def _qlora_rules(cfg: RTuneConfig) -> None:
    """What a 4-bit NF4 base (bitsandbytes' packed Params4bit) composes with."""
    if not cfg.peft.quantized:
        return
    if cfg.strategy.name != "ddp":
        raise UserError(f"peft=qlora runs under strategy=ddp, not strategy={cfg.strategy.name}: rtune's sharded "
                        "loading and checkpoints are not built for bitsandbytes' 4-bit weights yet; each DDP rank "
                        "holds the whole 4-bit base (~0.5 bytes a parameter), so use strategy=ddp, or peft=lora "
                        "peft.base_dtype=bf16 with strategy=fsdp")
    if cfg.peft.base_dtype != "auto":
        raise UserError("peft.base_dtype does not apply to peft=qlora: its base is 4-bit NF4, its other frozen "
                        "tensors in the compute dtype (trainer.precision); remove peft.base_dtype")
    if cfg.rollout.engine == "actors":
        raise UserError("rollout.engine=actors serves plain-precision rollout models, not a 4-bit base: with "
                        "peft=qlora use rollout.engine=policy (the learners generate with their own model)")


def _rules_across_sections(cfg: RTuneConfig) -> None:
    """Settings of one section that another section's settings rule out."""
    d, ob, t = cfg.data, cfg.objective, cfg.trainer
    lo, hi = worker_range(cfg)
    preference_objective = ob.name in PREFERENCE_OBJECTIVES
    _rl_rules(cfg)
    _qlora_rules(cfg)
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
    if cfg.peft.base_dtype == "bf16" and (cfg.peft.method != "lora" or t.precision != "bf16"):
        raise UserError("peft.base_dtype=bf16 keeps a frozen LoRA base in bf16, computed against under bf16 "
                        f"autocast: it needs peft=lora and trainer.precision=bf16 (got peft.method={cfg.peft.method}, "
                        f"trainer.precision={t.precision}); or peft.base_dtype=auto")
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


def _rl_rules(cfg: RTuneConfig) -> None:
    """objective=grpo learns from prompts and rewards; prompts and rewards mean nothing to the other objectives."""
    ob, d, t = cfg.objective, cfg.data, cfg.trainer
    if ob.name == "grpo" and d.format != "prompt":
        raise UserError(f"objective=grpo samples completions for prompts, but data.format={d.format}: use "
                        "data.format=prompt (records with a `prompt` and the columns the rewards read, e.g. "
                        "data=arith_prompts)")
    if ob.name != "grpo" and d.format == "prompt":
        raise UserError(f"data.format=prompt holds prompts for online RL: use objective=grpo (objective={ob.name} "
                        "needs data with the replies to learn from)")
    if ob.name != "grpo":
        return
    if not cfg.rewards:
        raise UserError("objective=grpo needs at least one reward: e.g. rewards=[exact_match] (built in: rust_tests, "
                        "rust_compiles, exact_match, regex; or pkg.module:function)")
    if cfg.reward_weights is not None and len(cfg.reward_weights) != len(cfg.rewards):
        raise UserError(f"reward_weights has {len(cfg.reward_weights)} weights for {len(cfg.rewards)} rewards: give "
                        "one per reward (or null: all 1)")
    if t.checkpoint_metric == "eval_loss":
        raise UserError("objective=grpo evaluates eval_reward (there is no eval_loss): set "
                        "trainer.checkpoint_metric=eval_reward trainer.checkpoint_mode=max (objective=grpo does)")
    lo, hi = worker_range(cfg)
    if cfg.rollout.engine == "actors" and lo != hi:
        raise UserError("rollout.engine=actors needs a fixed group (num_workers=N): an elastic group would change "
                        "which actor serves which worker mid-run")


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
