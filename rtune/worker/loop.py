"""The per-worker training loop: the one function a reader must understand.

`train_loop_per_worker(config)` runs on every Ray Train worker. Shape: setup (data, model, optimizer,
resume state) -> train (accumulate, clip, step, log, evaluate, checkpoint) -> return rank 0's summary.
Every rank executes the same sequence of collectives and `ray.train.report` calls, decided only by
the step number, so no rank ever waits on a barrier the others skip.

Each decision around the step belongs to a small piece with one job: the batch source (`batches.py`) says
which rows a step trains, the objective (`objectives.py`) what the loss is, the strategy (`strategy.py`) how
the model is spread over workers, `CheckpointReporter` when and how state is saved, `MetricWindow` and
`ProgressLog` what is logged, `MemoryProbe` and `DebugHooks` what tests and the summary need.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Dict, Optional, Tuple

import torch

from rtune import checkpoint as ckpt
from rtune.config import RTuneConfig, from_dict, is_uri
from rtune.data.pipeline import prepare_data
from rtune.data.prepared import PreparedData
from rtune.data.ray_engine import localize
from rtune.data.rows import PackedRows, collate
from rtune.metrics import METRICS_FILE
from rtune.model_init import loadable_on_meta
from rtune.model import (build_model, count_parameters, disable_dropout, fit_embeddings, frozen_bytes,
                         load_tokenizer_from, max_context, set_stop_tokens)
from rtune.telemetry import RayMetrics
from rtune.tokens import IGNORE
from rtune.tracking import Tracker
from rtune.data.prompt_sets import read_prompt_records
from rtune.engine import TransformersEngine
from rtune.rewards import Rewards
from rtune.worker.actor_rollouts import ActorRollouts
from rtune.worker.batches import PackedRowsSource
from rtune.worker.checkpointing import CheckpointReporter
from rtune.worker.collectives import all_reduce_sum, gather_objects
from rtune.worker.debug import DebugHooks
from rtune.worker.eval_generate import GenerationEval
from rtune.worker.objectives import SFT, Objective, make_objective, target_tokens
from rtune.worker.order import seed_micro_batch
from rtune.worker.probes import LoadProbe, MemoryProbe
from rtune.worker.progress import MetricWindow, ProgressLog, flops_per_token, peak_flops
from rtune.worker.quantized import quantized_base
from rtune.worker.reference import make_reference
from rtune.worker.rollouts import PolicyRollouts, PromptView, RolloutSource
from rtune.worker.strategy import Strategy, make_strategy


def grad_accum_steps(cfg: RTuneConfig, world_size: int) -> int:
    """Micro-batches per rank per step: from trainer.global_batch_size when set (the preflight checked it
    divides), so a group of another size trains the same global batch."""
    t = cfg.trainer
    if t.global_batch_size is None:
        return t.grad_accum_steps
    return t.global_batch_size // (world_size * t.micro_batch_size)


def data_position(state: Dict[str, Any], micro_batch_size: int) -> Dict[str, int]:
    """The global position saved in a checkpoint (older checkpoints saved a per-rank batch offset)."""
    data = state["data"]
    if "position" in data:
        return data
    workers = max(len(state.get("rng", [])), 1)
    position = data["offset"] * micro_batch_size * workers
    return {"epoch": data["epoch"], "position": position, "blocks_seen": position}


def forward_loss(model, batch: Dict[str, torch.Tensor], objective: Objective, autocast, reference=None,
                 split: str = "train"):
    """The objective's loss sum and metric sums for one micro-batch (DPO: the reference's log-probs first)."""
    if reference is not None:
        batch["reference"] = reference.pair_logps(batch, split)
    with autocast:
        logprobs = model(batch["input_ids"], batch["labels"], batch["position_ids"])
    return objective.loss(logprobs, batch)


@torch.no_grad()
def evaluate(model, dataset: PackedRows, micro_batch_size: int, max_batches: Optional[int], rank: int,
             world_size: int, device, autocast, objective: Objective = SFT, reference=None) -> Dict[str, float]:
    """Mean loss per unit (target token for SFT) over the validation set, split across ranks (exact average).

    Every rank runs the same number of forward passes (sharded models gather weights collectively):
    a rank with fewer rows re-reads row 0 and counts it for nothing.
    """
    was_training = model.training
    model.eval()
    per_rank = -(-len(dataset) // world_size)
    indices = [i if i < len(dataset) else -1 for i in range(rank, per_rank * world_size, world_size)]
    batches = [indices[i:i + micro_batch_size] for i in range(0, len(indices), micro_batch_size)]
    sums: Dict[str, float] = {"loss": 0.0, "units": 0.0}
    for batch_indices in batches[:max_batches]:
        batch = collate([dataset[max(i, 0)] for i in batch_indices])
        dummy = torch.tensor(batch_indices) < 0  # padding rows count for nothing
        batch["labels"][dummy] = IGNORE
        if "sequence_ids" in batch:
            batch["sequence_ids"][dummy] = -1
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, metrics = forward_loss(model, batch, objective, autocast, reference, split="val")
        sums["loss"] += float(loss)
        sums["units"] += objective.count(batch)
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    keys = sorted(sums)
    totals = dict(zip(keys, all_reduce_sum([sums[k] for k in keys], device)))
    model.train(was_training)
    units = max(totals.pop("units"), 1.0)
    result = {f"eval_{k}": v / units for k, v in totals.items()}
    if objective.has_perplexity:
        result["eval_ppl"] = math.exp(min(result["eval_loss"], 50.0))
    return result


def _local_run_dir(cfg: RTuneConfig) -> Optional[str]:
    """The run directory if storage is a local path (metrics and the storage scan need one)."""
    return None if is_uri(cfg.storage_path) else os.path.join(cfg.storage_path, cfg.run_name)


def _node_data(cfg: RTuneConfig, prepared: PreparedData) -> PreparedData:
    """The prepared data as this node sees it: the ray engine's shards (in place, or copied once from a URI), or
    the driver's cache, rebuilt (a cache hit) on a node that does not share the driver's disk."""
    if cfg.data.engine == "ray":
        return localize(prepared, cfg)
    if os.path.exists(prepared.train_path) and os.path.exists(prepared.val_path):
        return prepared
    return prepare_data(cfg)[0]


def _resume_state(cfg: RTuneConfig, run_dir: Optional[str]) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """(the checkpoint directory to resume from, its trainer state), or (None, None) for a fresh start."""
    import ray.train

    ray_ckpt = ray.train.get_checkpoint()
    with (ray_ckpt.as_directory() if ray_ckpt else contextlib.nullcontext()) as ray_ckpt_dir:
        resume_dir = ckpt.choose_resume_dir(ray_ckpt_dir, run_dir)
    return resume_dir, ckpt.load_trainer_state(resume_dir) if resume_dir else None


def _build_policy(cfg: RTuneConfig, strategy: Strategy, tokenizer, prepared: PreparedData, objective: Objective,
                  resume_dir: Optional[str]):
    """Build the model (its weights from the checkpoint being resumed), wrap it with the strategy, and return
    what LoRA on a model built from config must save with every checkpoint: (module, its pristine weights), or
    under QLoRA the directory of its saved fp32 weights."""
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    lora = cfg.peft.adapters
    if cfg.peft.quantized:  # QLoRA: the base loads 4-bit (quantized.py); checkpoints hold the adapter
        import ray.train

        model, base_dir = quantized_base(cfg, tokenizer, strategy.device, ray.train.get_context().get_local_rank())
        new_token_ids = fit_embeddings(model, len(tokenizer))
        _wrap(cfg, strategy, model, tokenizer, prepared, objective, resume_dir, new_token_ids)
        return base_dir if strategy.rank == 0 else None  # a from-config base's saved files
    # Full weights come straight from the checkpoint; a LoRA run rebuilds its base and loads the adapter.
    with strategy.model_init():
        source = None if lora else resume_dir
        model = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id, checkpoint_dir=source,
                            on_meta=strategy.loads_on_meta)
        if strategy.loads_on_meta and not loadable_on_meta(model, len(tokenizer)):
            if strategy.rank == 0:
                print("[rtune] FSDP2 builds this model whole on every rank before sharding (new tokens to add to "
                      "its embeddings, or weights not in safetensors)", flush=True)
            model = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id, checkpoint_dir=source)
        new_token_ids = fit_embeddings(model, len(tokenizer))  # a chat template's tokens, new to a hub model
    # LoRA on a model built from config: the base exists nowhere else, so checkpoints carry a copy of its
    # pristine weights (taken before peft rewrites the modules) for export and generate.
    base_model, on_meta = None, next(model.parameters()).device.type == "meta"
    if lora and cfg.model.name_or_path is None and strategy.rank == 0 and not on_meta:
        base_model = (model, {k: v.detach().clone() for k, v in model.state_dict().items()})
    _wrap(cfg, strategy, model, tokenizer, prepared, objective, resume_dir, new_token_ids)
    if lora and cfg.model.name_or_path is None and on_meta:  # the base is frozen: its weights now are pristine
        pristine = strategy.base_state()
        base_model = (model, pristine) if strategy.rank == 0 else None
    return base_model


def _wrap(cfg: RTuneConfig, strategy: Strategy, model, tokenizer, prepared: PreparedData, objective: Objective,
          resume_dir: Optional[str], new_token_ids) -> None:
    """The built model's run settings, then LoRA (+ the adapter being resumed), DDP (prepare_model) / FSDP2 /
    DeepSpeed, optimizer and schedule."""
    set_stop_tokens(model, tokenizer, prepared.end_of_turn)
    if objective.deterministic_forward:
        disable_dropout(model)
    if cfg.trainer.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    strategy.setup(model, adapter_dir=resume_dir if cfg.peft.adapters else None, new_token_ids=new_token_ids)


def _reference(cfg: RTuneConfig, strategy: Strategy, tokenizer, prepared: PreparedData, splits, resume_dir,
               autocast):
    """DPO's reference model (see reference.py)."""
    def build_initial():  # the same seeded build as the policy's, without touching the run's RNG
        with torch.random.fork_rng(devices=[]), strategy.model_init():
            torch.manual_seed(cfg.seed)
            initial = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id)
            fit_embeddings(initial, len(tokenizer))
        disable_dropout(initial)
        return initial

    return make_reference(cfg, strategy, prepared, splits, resume_dir, build_initial, strategy.rank,
                          strategy.world_size, strategy.device, autocast)


def policy_generate(strategy: Strategy, tokenizer, cfg: RTuneConfig):
    """The worker's own current model as a generate function (rollout.engine=policy, and eval_reward)."""
    def generate(prompt_ids, sampling):
        with strategy.for_generation() as unwrapped:
            engine = TransformersEngine(unwrapped, tokenizer, cfg.generation.max_batch_size,
                                        lockstep=strategy.gathers_weights_in_forward)
            return engine.generate(prompt_ids, sampling)

    return generate


def _rollout_source(cfg: RTuneConfig, config: Dict[str, Any], prepared: PreparedData, tokenizer, strategy: Strategy,
                    accum: int, reference, position) -> RolloutSource:
    """Online RL's batch source: prompts, a rollout engine (this worker's model or the driver's actors), rewards."""
    records, val_records = read_prompt_records(prepared.train_path), read_prompt_records(prepared.val_path)
    r = cfg.rollout
    if r.eval_max_prompts:
        val_records = val_records[:r.eval_max_prompts]
    if r.engine == "actors":
        engine = ActorRollouts(config["rollout_actors"], strategy.rank, r.sync_every_steps, r.max_staleness,
                               strategy.trainable_weights, strategy.device)
    else:
        engine = PolicyRollouts(policy_generate(strategy, tokenizer, cfg))
    return RolloutSource(cfg, records, val_records, PromptView(tokenizer, r.chat, records), engine,
                         Rewards(cfg.rewards, cfg.reward_weights, r.reward_timeout_s), strategy.rank,
                         strategy.world_size, accum, strategy.device, tokenizer.pad_token_id, reference, position)


def _describe_batches(cfg: RTuneConfig, prepared: PreparedData, batches) -> str:
    if isinstance(batches, RolloutSource):
        return (f"{prepared.train_documents} train prompts, {prepared.val_documents} held out |"
                f" {batches.rows_per_step} prompts x {cfg.objective.num_generations} completions per step"
                f" ({cfg.rollout.engine} rollouts), {batches.steps_per_epoch} steps per epoch")
    return (f"{prepared.train_blocks} train rows x {cfg.data.seq_len} tokens ({prepared.packing} packing),"
            f" {batches.steps_per_epoch} steps per epoch | {batches.rows_per_step} rows"
            f" ({batches.rows_per_step * cfg.data.seq_len:,} token slots) per step")


def train_loop_per_worker(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    import ray.train
    import ray.train.torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    cfg = from_dict(config["cfg"])
    t = cfg.trainer
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":  # torch's threads = the cores Ray reserved for this worker
        torch.set_num_threads(int(cfg.cpus_per_worker))
    run_dir = _local_run_dir(cfg)
    is_main = rank == 0
    accum = grad_accum_steps(cfg, world_size)  # this group's share of a fixed global batch

    # ---- setup: data (cache hit: the driver prepared it), model, optimizer, resume state ----------
    prepared = _node_data(cfg, PreparedData(**config["data"]))
    tokenizer = load_tokenizer_from(prepared.tokenizer_dir, trust_remote_code=False)
    objective = make_objective(cfg.objective, cfg.rollout.max_new_tokens)
    online_rl = objective.name == "grpo"  # rollouts, not rows, are the batches (rollouts.py)
    resume_dir, state = _resume_state(cfg, run_dir)
    strategy = make_strategy(cfg, rank, world_size, device, accum)
    load = LoadProbe()  # what building and sharding the model costs this worker (sharded loading: a shard)
    base_model = _build_policy(cfg, strategy, tokenizer, prepared, objective, resume_dir)
    load.done()
    load.mb["frozen"] = frozen_bytes(strategy.raw) / 2 ** 20  # the base's share of it (LoRA, QLoRA: its dtype)
    trainable, total = count_parameters(strategy.raw)
    step = 0
    if state is not None:
        strategy.load(resume_dir, state)
        step = state["step"]
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    position = data_position(state, t.micro_batch_size) if state else None
    if online_rl:
        reference = _reference(cfg, strategy, tokenizer, prepared, {}, resume_dir, autocast) if cfg.objective.beta \
            else None
        batches = _rollout_source(cfg, config, prepared, tokenizer, strategy, accum, reference, position)
    else:
        train_set = PackedRows(prepared.train_path, tokenizer.pad_token_id)
        val_set = PackedRows(prepared.val_path, tokenizer.pad_token_id)
        # One seeded permutation of the rows per epoch, cut into global batches: the same rows in the same order
        # whatever the worker count (a resumed run may have another), resumed at the saved global position.
        batches = PackedRowsSource(train_set, cfg.seed, rank, world_size, t.micro_batch_size, accum, device,
                                   position=position)
        reference = _reference(cfg, strategy, tokenizer, prepared, {"train": train_set, "val": val_set}, resume_dir,
                               autocast) if objective.needs_reference else None
    peak_per_worker, peak_source = peak_flops(device, t.precision, cfg.cpus_per_worker)
    progress = ProgressLog(os.path.join(run_dir, METRICS_FILE) if run_dir else None, step, t.max_steps, is_main,
                           echo=config.get("echo_progress", True),
                           flops_per_token=flops_per_token(strategy.raw.config, total, cfg.data.seq_len),
                           peak_flops_total=peak_per_worker * world_size)
    # Rank 0's trackers; a resumed run (same driver or a re-run) continues the same tracker runs.
    tracker = Tracker(cfg, config["cfg"], run_dir, step, (state or {}).get("tracking"), enabled=is_main,
                      warn=progress.warn)
    starts = progress.event(
        (f"resuming from {resume_dir} at step {step}" if resume_dir else "starting fresh")
        + f" | {world_size} worker(s) on {device}, {cfg.strategy.name}"
        f" | {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)"
        f" | {_describe_batches(cfg, prepared, batches)} | MFU peak: {peak_source}"
        + "".join(f" | {where}" for where in tracker.locations), step=step, resumed_from=resume_dir)
    checkpoints = CheckpointReporter(cfg, strategy, tokenizer, base_model, reference)  # sync or in the background
    ray_metrics = RayMetrics(cfg.run_name, enabled=is_main)  # the dashboard's / Prometheus' view of the run
    ray_metrics.update({"step": step, "restarts": max(starts - 1, 0)})
    debug = DebugHooks(cfg, rank, world_size, run_dir)
    generation_eval = GenerationEval(cfg, tokenizer, rank, world_size, strategy.gathers_weights_in_forward,
                                     context=max_context(strategy.raw.config))
    window = MetricWindow(device)
    model = strategy.model
    memory = MemoryProbe(load.mb)  # from here on: what training itself holds

    def log(at_step: int, record: Dict[str, Any], window_tokens: int) -> None:
        logged = progress.log(at_step, record, window_tokens)
        ray_metrics.update(logged)
        tracker.log(at_step, logged)

    def run_eval() -> Dict[str, float]:
        if online_rl:  # eval_reward: completions of held-out prompts, scored
            return batches.evaluate(policy_generate(strategy, tokenizer, cfg), strategy.gathers_weights_in_forward,
                                    cfg.rollout.eval_samples)
        return evaluate(model, val_set, t.micro_batch_size, t.eval_max_batches, rank, world_size, device, autocast,
                        objective, reference)

    def run_generation_eval() -> Dict[str, float]:  # the model writes code; its checks pass or fail
        with strategy.for_generation() as unwrapped:
            return generation_eval.run(unwrapped)

    last_eval: Dict[str, float] = {}  # the latest evaluation (eval_loss, or eval_reward for online RL)
    last_pass: Dict[str, float] = {}  # the latest eval_pass@1, sent with every later report (a search ranks by it)
    if step == 0:  # the starting point of the eval curves
        record = run_eval()
        if generation_eval.due(0):
            last_pass = run_generation_eval()
            record.update(last_pass)
        last_eval = record
        log(0, record, 0)

    # ---- train ------------------------------------------------------------------------------------
    model.train()
    while step < t.max_steps:
        lr = strategy.lr()
        micro_batches = batches.next_step(step)
        # Normalise by the loss units (target tokens) of the whole step on every rank, so each unit weighs
        # the same however samples fall into micro-batches and workers (chat samples vary in length).
        step_units = all_reduce_sum([sum(objective.count(b.tensors) for b in micro_batches)], device)[0]
        for i, micro in enumerate(micro_batches):
            seed_micro_batch(cfg.seed, step, micro.index)  # dropout keyed by global position, not rank
            with strategy.accumulating(is_last_micro_step=i == len(micro_batches) - 1):
                loss_sum, metrics = forward_loss(model, micro.tensors, objective, autocast,
                                                 None if online_rl else reference)  # RL's: in the batch
                strategy.backward(loss_sum * (world_size / max(step_units, 1.0)))  # DDP averages over ranks
            window.add(micro.tensors, loss_sum.item(), metrics, target_tokens(micro.tensors))
        strategy.step()  # clip, optimizer, schedule
        step += 1
        debug.after_step(step, batches.epoch, [micro.rows for micro in micro_batches])
        step_tokens, step_targets = window.end_step(step_units / world_size)
        progress.step(step, step_tokens * world_size, step_targets * world_size)

        do_checkpoint = step == t.max_steps or step % t.checkpoint_every_steps == 0
        do_eval = do_checkpoint or step % t.eval_every_steps == 0  # best-checkpoint ranking needs eval_loss
        do_generate = generation_eval.due(step)
        record: Dict[str, Any] = {}
        window_tokens = 0
        if step % t.log_every_steps == 0 or do_eval or do_generate:
            record, window_tokens = window.record(lr, batches.metrics())
        with progress.paused():  # eval and checkpoint time is not training throughput
            if do_eval:
                last_eval = run_eval()
                record.update(last_eval)
            if do_generate:
                last_pass = run_generation_eval()
                record.update(last_pass)
        if record:  # logged before the checkpoint exists, so a resumed run's record has no gaps
            log(step, record, window_tokens)
        with memory.around_report(do_checkpoint), progress.paused():
            if do_eval:
                checkpoints.report(step, {**last_pass, **record}, do_checkpoint, batches.state(), tracker.run_ids())
        debug.after_report(step, do_checkpoint)

    # ---- summary: rank 0's return value becomes Result.return_value on the driver ------------------
    peaks = gather_objects(memory.summary())
    if not is_main:
        return None
    tracker.close()
    return {"final_step": step, "eval_loss": last_eval.get("eval_loss"),
            **({"eval_reward": last_eval["eval_reward"]} if "eval_reward" in last_eval else {}),
            "steady_tokens_per_s": progress.steady_tokens_per_s(),
            "steady_target_tokens_per_s": progress.steady_target_tokens_per_s(),
            "steady_mfu": progress.steady_mfu(), "mfu_peak_source": peak_source,
            "trainable_params": trainable, "total_params": total,
            "train_peak_rss_mb_per_worker": [p["train"] for p in peaks],
            "checkpoint_rss_mb_per_worker": [p["checkpoint"] for p in peaks],
            "peak_rss_mb_per_worker": [p["run"] for p in peaks],
            "load_rss_mb_per_worker": [p["load"] for p in peaks]}
