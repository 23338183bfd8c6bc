"""The per-worker training loop: the one function a reader must understand.

`train_loop_per_worker(config)` runs on every Ray Train worker. Shape: setup (data, model, optimizer,
resume state) -> train (accumulate, clip, step, log, evaluate, checkpoint) -> return rank 0's summary.
Every rank executes the same sequence of collectives and `ray.train.report` calls, decided only by
the step number, so no rank ever waits on a barrier the others skip.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import secrets
import signal
import time
from typing import Any, Dict, Optional

import torch

from rtune import checkpoint as ckpt
from rtune.config import RTuneConfig, from_dict, is_uri
from rtune.data.pipeline import prepare_data
from rtune.data.prepared import PreparedData
from rtune.data.rows import PackedRows, collate
from rtune.metrics import METRICS_FILE, ProgressLog, flops_per_token, peak_flops, peak_rss_mb, reset_peak_rss, rss_mb
from rtune.model import build_model, count_parameters, fit_embeddings, load_tokenizer_from
from rtune.telemetry import RayMetrics
from rtune.tokens import IGNORE
from rtune.tracking import Tracker
from rtune.worker.checkpointing import CheckpointReporter
from rtune.worker.collectives import all_reduce_sum, gather_objects
from rtune.worker.objectives import SFT, Objective, make_objective, target_tokens
from rtune.worker.order import GlobalOrder, seed_micro_batch
from rtune.worker.reference import make_reference
from rtune.worker.strategy import make_strategy


def grad_accum_steps(cfg: RTuneConfig, world_size: int) -> int:
    """Micro-batches per step: from trainer.global_batch_size when set (the preflight checked it divides)."""
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


def _record_rows(run_dir: Optional[str], rank: int, step: int, epoch: int, world_size: int, group: str,
                 rows: list) -> None:
    """debug.record_rows: append the rows this rank trained at this step (tests prove the global order).

    group: this worker group's id, so a reader keeps only the newest group's record of a step that a lost
    group had trained after its last checkpoint."""
    if run_dir is None:
        return
    record = {"step": step, "epoch": epoch, "world_size": world_size, "group": group, "time": time.time(),
              "rows": rows}
    with open(os.path.join(run_dir, f"rows_rank{rank}.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


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
    return {f"eval_{k}": v / units for k, v in totals.items()}


def _disable_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for key in ("attention_dropout", "attn_pdrop"):  # attention kernels read it from the config
        if hasattr(model.config, key):
            setattr(model.config, key, 0.0)


def _set_stop_tokens(model, tokenizer, end_of_turn: Optional[str]) -> None:
    """Generation stops at EOS and at the chat template's end-of-turn token (saved with every checkpoint)."""
    if not end_of_turn:
        return
    stop = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(end_of_turn)]
    model.generation_config.eos_token_id = sorted(set(stop))
    model.generation_config.pad_token_id = tokenizer.pad_token_id


def _local_run_dir(cfg: RTuneConfig) -> Optional[str]:
    """The run directory if storage is a local path (metrics and the storage scan need one)."""
    return None if is_uri(cfg.storage_path) else os.path.join(cfg.storage_path, cfg.run_name)


def _maybe_inject_fault(cfg: RTuneConfig, step: int, rank: int, run_dir: Optional[str], checkpointed: bool) -> None:
    """debug.fail_at_step: SIGKILL this worker once, as a crashed machine would (for tests/drills).

    With async uploads it first waits for this step's checkpoint to be complete on storage, so a drill
    resumes where it says; with debug.upload_delay_s only for its marker: a worker lost mid-upload."""
    if cfg.debug.fail_at_step != step or rank != cfg.debug.fail_rank or run_dir is None:
        return
    marker = os.path.join(run_dir, f".fault_injected_step{step}_rank{rank}")
    if os.path.exists(marker):
        return
    open(marker, "w").close()
    if checkpointed and cfg.trainer.checkpoint_upload == "async":
        step_dir = os.path.join(run_dir, ckpt.dir_name(step))
        deadline = time.time() + 120
        while time.time() < deadline:
            if os.path.exists(os.path.join(step_dir, ckpt.MARKER)) if cfg.debug.upload_delay_s else \
                    ckpt.find_latest(run_dir) == step_dir:
                break
            time.sleep(0.05)
    print(f"[rtune] debug.fail_at_step={step}: killing rank {rank} (pid {os.getpid()})", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


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
    t.grad_accum_steps = grad_accum_steps(cfg, world_size)  # this group's share of a fixed global batch

    # ---- setup: data (cache hit: the driver prepared it), model, optimizer, resume state ----------
    prepared = PreparedData(**config["data"])
    if cfg.data.engine == "ray":  # shared shards: read in place, or copied once to this node from a URI
        from rtune.data.ray_engine import localize

        prepared = localize(prepared, cfg)
    elif not (os.path.exists(prepared.train_path) and os.path.exists(prepared.val_path)):
        prepared, _ = prepare_data(cfg)  # a node that does not share the driver's disk rebuilds its cache
    tokenizer = load_tokenizer_from(prepared.tokenizer_dir, trust_remote_code=False)
    train_set = PackedRows(prepared.train_path, tokenizer.pad_token_id)
    val_set = PackedRows(prepared.val_path, tokenizer.pad_token_id)
    objective = make_objective(cfg.objective)

    ray_ckpt = ray.train.get_checkpoint()
    with (ray_ckpt.as_directory() if ray_ckpt else contextlib.nullcontext()) as ray_ckpt_dir:
        resume_dir = ckpt.choose_resume_dir(ray_ckpt_dir, run_dir)
    state = ckpt.load_trainer_state(resume_dir) if resume_dir else None
    strategy = make_strategy(cfg, rank, world_size, device)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    # Full weights come straight from the checkpoint; a LoRA run rebuilds its base and loads the adapter.
    weights_dir = resume_dir if cfg.peft.method == "none" else None
    with strategy.model_init():
        model = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id, checkpoint_dir=weights_dir)
        new_token_ids = fit_embeddings(model, len(tokenizer))  # a chat template's tokens, new to a hub model
    _set_stop_tokens(model, tokenizer, prepared.end_of_turn)
    if objective.name != "sft":  # preference log-ratios compare forward passes: no dropout noise in them (as TRL)
        _disable_dropout(model)
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    # LoRA on a model built from config: the base exists nowhere else, so checkpoints carry a copy of its
    # pristine weights (taken before peft rewrites the modules) for export and generate.
    base_model = None
    if cfg.peft.method == "lora" and cfg.model.name_or_path is None and rank == 0:
        base_model = (model, {k: v.detach().clone() for k, v in model.state_dict().items()})
    # LoRA (+ the adapter being resumed), then DDP (prepare_model) / FSDP2 / DeepSpeed, optimizer, schedule
    strategy.setup(model, adapter_dir=resume_dir if cfg.peft.method == "lora" else None,
                   new_token_ids=new_token_ids)
    trainable, total = count_parameters(strategy.raw)
    # One seeded permutation of the rows per epoch, cut into global batches: the same rows in the same order
    # whatever the worker count (a resumed run may have another), resumed at the saved global position.
    rows_per_step = world_size * t.micro_batch_size * t.grad_accum_steps
    step = 0
    position: Dict[str, int] = {}
    if state is not None:
        strategy.load(resume_dir, state)
        step = state["step"]
        position = data_position(state, t.micro_batch_size)
    order = GlobalOrder(len(train_set), cfg.seed, rows_per_step, t.micro_batch_size, **position)
    group_id = gather_objects(secrets.token_hex(4))[0] if cfg.debug.record_rows else ""  # rank 0's, everywhere

    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    reference = None
    if objective.needs_reference:
        def build_initial():  # the same seeded build as the policy's, without touching the run's RNG
            with torch.random.fork_rng(devices=[]), strategy.model_init():
                torch.manual_seed(cfg.seed)
                initial = build_model(cfg.model, len(tokenizer), tokenizer.eos_token_id)
                fit_embeddings(initial, len(tokenizer))
            _disable_dropout(initial)
            return initial

        reference = make_reference(cfg, strategy, prepared, {"train": train_set, "val": val_set}, resume_dir,
                                   build_initial, rank, world_size, device, autocast)
    peak_per_worker, peak_source = peak_flops(device, t.precision, cfg.cpus_per_worker)
    progress = ProgressLog(os.path.join(run_dir, METRICS_FILE) if run_dir else None, step, t.max_steps, is_main,
                           echo=config.get("echo_progress", True),
                           flops_per_token=flops_per_token(strategy.raw.config, total, cfg.data.seq_len),
                           peak_flops_total=peak_per_worker * world_size)
    # Rank 0's trackers; a resumed run (same driver or a re-run) continues the same tracker runs.
    tracker = Tracker(cfg, config["cfg"], run_dir, step, (state or {}).get("tracking"), enabled=is_main,
                      warn=progress.warn)
    started = f"resuming from {resume_dir} at step {step}" if resume_dir else "starting fresh"
    starts = progress.event(f"{started}"
                   f" | {world_size} worker(s) on {device}, {cfg.strategy.name}"
                   f" | {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)"
                   f" | {prepared.train_blocks} train rows x {cfg.data.seq_len} tokens ({prepared.packing} packing),"
                   f" {len(train_set) // rows_per_step} steps per epoch | {rows_per_step} rows"
                   f" ({rows_per_step * cfg.data.seq_len:,} token slots) per step | MFU peak: {peak_source}"
                   + "".join(f" | {where}" for where in tracker.locations), step=step, resumed_from=resume_dir)
    checkpoints = CheckpointReporter(cfg, strategy, tokenizer, base_model, reference)  # sync or in the background
    ray_metrics = RayMetrics(cfg.run_name, enabled=is_main)  # the dashboard's / Prometheus' view of the run
    ray_metrics.update({"step": step, "restarts": max(starts - 1, 0)})
    eval_loss: Optional[float] = None
    window = [0.0] * 5  # loss sum, loss units, non-padding tokens, target tokens, token slots since the last log
    window_metrics: Dict[str, float] = {}  # the objective's metric sums (DPO rewards) since the last log

    model = strategy.model
    run_peak_rss_mb = peak_rss_mb()  # so far: imports, model build, wrapping
    reset_peak_rss()  # from here on: what training itself holds (until the first checkpoint is written)
    train_peak_rss_mb: Optional[float] = None
    checkpoint_rss_mb: Dict[str, float] = {}  # the first checkpoint: resident set before it, peak during it

    def run_eval() -> Dict[str, float]:
        result = evaluate(model, val_set, t.micro_batch_size, t.eval_max_batches, rank, world_size, device,
                          autocast, objective, reference)
        if objective.name == "sft":  # perplexity is a cross-entropy's, not a preference loss's
            result["eval_ppl"] = math.exp(min(result["eval_loss"], 50.0))
        return result

    if step == 0:  # the starting point of the eval-loss curve
        record0 = run_eval()
        eval_loss = record0["eval_loss"]
        logged = progress.log(0, record0, 0)
        ray_metrics.update(logged)
        tracker.log(0, logged)

    # ---- train ------------------------------------------------------------------------------------
    model.train()
    while step < t.max_steps:
        lr = strategy.lr()
        mine = order.rank_micro_batches(rank, world_size)
        micro_batches = [{k: v.to(device, non_blocking=True) for k, v in collate([train_set[i] for i in rows]).items()}
                         for _, rows in mine]
        # Normalise by the loss units (target tokens) of the whole step on every rank, so each unit weighs
        # the same however samples fall into micro-batches and workers (chat samples vary in length).
        step_units = all_reduce_sum([sum(objective.count(b) for b in micro_batches)], device)[0]
        step_loss, step_tokens, step_targets, step_slots = 0.0, 0, 0, 0
        for micro_step, batch in enumerate(micro_batches):
            seed_micro_batch(cfg.seed, step, mine[micro_step][0])  # dropout keyed by global position, not rank
            with strategy.accumulating(is_last_micro_step=micro_step == t.grad_accum_steps - 1):
                loss_sum, metrics = forward_loss(model, batch, objective, autocast, reference)
                strategy.backward(loss_sum * (world_size / max(step_units, 1.0)))  # DDP averages over ranks
            step_loss += loss_sum.item()
            for key, value in metrics.items():
                window_metrics[key] = window_metrics.get(key, 0.0) + float(value)
            step_tokens += int(batch["n_tokens"].sum())
            step_slots += batch["input_ids"].numel()  # computed positions, padding included
            step_targets += target_tokens(batch)
        strategy.step()  # clip, optimizer, schedule
        step += 1
        if cfg.debug.step_delay_s:
            time.sleep(cfg.debug.step_delay_s)
        if cfg.debug.record_rows:
            _record_rows(run_dir, rank, step, order.epoch, world_size, group_id, [rows for _, rows in mine])
        window = [window[0] + step_loss, window[1] + step_units / world_size, window[2] + step_tokens,
                  window[3] + step_targets, window[4] + step_slots]
        progress.step(step, step_tokens * world_size, step_targets * world_size)

        is_last = step == t.max_steps
        do_checkpoint = is_last or step % t.checkpoint_every_steps == 0
        do_eval = do_checkpoint or step % t.eval_every_steps == 0  # best-checkpoint ranking needs eval_loss
        record: Dict[str, Any] = {}
        window_tokens = 0
        if step % t.log_every_steps == 0 or do_eval:
            keys = sorted(window_metrics)
            totals = all_reduce_sum(window + [window_metrics[k] for k in keys], device)  # sums over ranks
            loss_sum, units, n_tokens, n_targets, n_slots = totals[:5]
            record = {"loss": loss_sum / max(units, 1.0), "lr": lr, "tokens": int(n_tokens),
                      "target_tokens": int(n_targets), "token_slots": int(n_slots),
                      "blocks_seen": order.blocks_seen, "epoch": order.epoch,
                      **{k: v / max(units, 1.0) for k, v in zip(keys, totals[5:])}}
            window_tokens, window, window_metrics = int(n_tokens), [0.0] * 5, {}
        if do_eval:
            with progress.paused():  # eval and checkpoint time is not training throughput
                record.update(run_eval())
                eval_loss = record["eval_loss"]
        if record:  # logged before the checkpoint exists, so a resumed run's record has no gaps
            logged = progress.log(step, record, window_tokens)
            ray_metrics.update(logged)
            tracker.log(step, logged)
        first_checkpoint = do_checkpoint and train_peak_rss_mb is None
        if first_checkpoint:
            train_peak_rss_mb, rss_before_checkpoint_mb = peak_rss_mb(), rss_mb()
            reset_peak_rss()
        if do_eval:
            with progress.paused():
                checkpoints.report(step, record, do_checkpoint, order.state(), tracker.run_ids())
        if first_checkpoint:  # with sync upload, the whole write; with async, what the training thread does
            checkpoint_rss_mb = {"before": rss_before_checkpoint_mb, "peak": peak_rss_mb()}
        _maybe_inject_fault(cfg, step, rank, run_dir, do_checkpoint)

    # ---- summary: rank 0's return value becomes Result.return_value on the driver ------------------
    peaks = gather_objects({"train": train_peak_rss_mb or peak_rss_mb(), "checkpoint": checkpoint_rss_mb,
                             "run": max(run_peak_rss_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
    if not is_main:
        return None
    tracker.close()
    return {"final_step": step, "eval_loss": eval_loss, "steady_tokens_per_s": progress.steady_tokens_per_s(),
            "steady_target_tokens_per_s": progress.steady_target_tokens_per_s(),
            "steady_mfu": progress.steady_mfu(), "mfu_peak_source": peak_source,
            "trainable_params": trainable, "total_params": total,
            "train_peak_rss_mb_per_worker": [p["train"] for p in peaks],
            "checkpoint_rss_mb_per_worker": [p["checkpoint"] for p in peaks],
            "peak_rss_mb_per_worker": [p["run"] for p in peaks]}

