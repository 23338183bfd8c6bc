"""`trainer.eval_generate_every_steps`: the workers' own current model writes code for a slice of a benchmark, the
verifier checks it in the sandbox as Ray tasks, and the run logs `eval_pass@1` (and `eval_pass@<k>` for each other k
of `eval.k`).

Each rank generates for its share of the tasks (task i on rank i mod world size) with the shared engine over its
unwrapped model; rank 0 gathers the completions, checks them (tasks that reserve no CPU: the workers hold the
cores, and wait) and computes pass@1, the mean over tasks of passed / samples. Sharded models (FSDP2, ZeRO-3)
gather weights at every forward, so there every rank runs the same number of forward passes (lockstep decoding,
and the same number of prompt batches).
"""

from __future__ import annotations

from typing import Dict, Optional

from rtune.config import RTuneConfig
from rtune.data.benchmarks import COMPLETION_STOP, load_benchmark, prompt_text, to_check
from rtune.engine import Sampling, TransformersEngine, encode_prompts
from rtune.passk import mean_pass_at_k
from rtune.verifiers import check_many
from rtune.worker.collectives import gather_objects

METRIC = "eval_pass@1"


class GenerationEval:
    def __init__(self, cfg: RTuneConfig, tokenizer, rank: int, world_size: int, sharded: bool,
                 context: Optional[int] = None):
        e, self.cfg = cfg.eval, cfg
        self.every = cfg.trainer.eval_generate_every_steps
        self.rank, self.world_size, self.tokenizer, self.sharded = rank, world_size, tokenizer, sharded
        if self.every is None:
            return
        self.tasks = load_benchmark(e.benchmark, e.max_tasks).tasks
        self.mine = list(range(rank, len(self.tasks), world_size))
        every_prompt = encode_prompts(tokenizer, [prompt_text(t, e.prompt_style) for t in self.tasks],
                                      chat=e.prompt_style == "chat")
        self.prompt_ids = [every_prompt[i] for i in self.mine]
        # Where the model's positions end, every rank stops at the same step: room left after the longest prompt.
        new_tokens = e.max_new_tokens if context is None else min(e.max_new_tokens,
                                                                  context - max(map(len, every_prompt)))
        self.sampling = Sampling(max_new_tokens=max(1, new_tokens), temperature=e.temperature, top_p=e.top_p,
                                 n=e.samples, seed=e.seed,
                                 stop=(COMPLETION_STOP,) if e.prompt_style == "completion" else ())

    def due(self, step: int) -> bool:
        """At step 0 (the starting point), every `every` steps, and at the last step."""
        return self.every is not None and (step % self.every == 0 or step == self.cfg.trainer.max_steps)

    def run(self, model) -> Dict[str, float]:
        """Every rank calls this at the same step; rank 0 returns {"eval_pass@1": ..., ...}, the others {}."""
        engine = TransformersEngine(model, self.tokenizer, self.cfg.generation.max_batch_size, lockstep=self.sharded)
        prompts = self.prompt_ids
        if self.sharded:  # as many prompt batches on every rank: pad with a prompt whose completions are dropped
            per_rank = -(-len(self.tasks) // self.world_size)
            prompts = prompts + [prompts[0] if prompts else [self.tokenizer.eos_token_id]] * (per_rank - len(prompts))
        completions = engine.generate(prompts, self.sampling)[:len(self.mine)]
        mine = [(i, [(c.text, c.stop_reason) for c in per_task]) for i, per_task in zip(self.mine, completions)]
        gathered = gather_objects(mine)
        if self.rank != 0:
            return {}
        style, per_task = self.cfg.eval.prompt_style, sorted(item for part in gathered for item in part)
        items = [{"record": record, "completion": completion} for i, samples in per_task
                 for record, completion in (to_check(self.tasks[i], text, style, stop) for text, stop in samples)]
        checks = check_many(self.cfg.eval.verifier, items, self.cfg.eval.timeout_s, cpus_per_check=0)
        n = self.cfg.eval.samples
        counts = [(n, sum(c.status == "passed" for c in checks[j * n:(j + 1) * n])) for j in range(len(per_task))]
        return {f"eval_{k}": v for k, v in mean_pass_at_k(counts, sorted({1, *self.cfg.eval.k})).items()}
