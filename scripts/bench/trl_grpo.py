"""The TRL side of the side-by-side GRPO benchmark: `scripts/bench/grpo.py` runs rtune's GRPO, this runs TRL's
`GRPOTrainer` on the same model, prompts and hyper-parameters, so the two can be compared on

- wall seconds per optimizer step (generation + scoring + one gradient update; held-out eval time excluded),
- the mean training reward of each step (TRL's logged `reward`: the mean over the step's completions),
- the held-out reward: greedy decoding over `eval_prompts`, exact match, at step 0, every `eval_every_steps`
  steps and at the end.

Each optimizer step is `prompts_per_step` prompts x `num_generations` sampled completions and exactly one
gradient update on them: TRL counts completions in its per-device batch, so the batch is prompts x generations,
with no gradient accumulation, one generation per step (steps_per_generation=1) and one pass over it
(num_iterations=1). The policy that sampled is then the one being updated, so the PPO ratio is 1 and the clip
range (epsilon, epsilon_high) never binds on this schedule; it is passed only to mirror rtune's config.
"""

from __future__ import annotations

import time

import torch

EVAL_BATCH = 64  # prompts per greedy eval batch


def exact_match(prompts, completions, answer, **kwargs) -> list[float]:
    """TRL reward function: 1.0 where the completion equals the answer up to whitespace."""
    return [float(" ".join(c.split()) == " ".join(a.split())) for c, a in zip(completions, answer)]


@torch.no_grad()
def greedy_reward(model, tokenizer, records: list[dict], max_new_tokens: int) -> float:
    """Mean exact-match reward of greedy completions (left padded, cut at the first EOS)."""
    was_training = model.training
    model.eval()
    eos, rewards = tokenizer.eos_token_id, []
    for i in range(0, len(records), EVAL_BATCH):
        batch = records[i : i + EVAL_BATCH]
        # Tokenized as TRL tokenizes plain-string prompts (tokenizer(text), default special tokens)
        enc = tokenizer([r["prompt"] for r in batch], return_tensors="pt", padding=True, padding_side="left")
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
        for row, r in zip(out[:, enc["input_ids"].shape[1]:].tolist(), batch):
            row = row[: row.index(eos)] if eos in row else row
            rewards += exact_match(None, [tokenizer.decode(row, skip_special_tokens=True)], [r["answer"]])
    model.train(was_training)
    return sum(rewards) / max(len(rewards), 1)


def run_trl(model_dir: str, train_prompts: list[dict], eval_prompts: list[dict], steps: int, num_generations: int,
            prompts_per_step: int, max_new_tokens: int, temperature: float, lr: float, seed: int,
            epsilon_low: float = 0.2, epsilon_high: float = 0.28, beta: float = 0.0, loss_type: str = "dapo",
            eval_every_steps: int = 5, threads: int = 2, output_dir: str = "/tmp/trl_grpo", warmup_steps: int = 0,
            adam_betas: tuple = (0.9, 0.999)) -> dict:
    # Imported here so that importing this module (e.g. from grpo.py) does not require TRL
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(threads)
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Loaded here rather than by path so the dtype is ours (fp32), not TRL's model_init default
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    config = GRPOConfig(
        output_dir=output_dir,
        # TRL's per-device batch counts completions: one step = prompts_per_step x num_generations, one update
        per_device_train_batch_size=prompts_per_step * num_generations,
        gradient_accumulation_steps=1,
        steps_per_generation=1,  # generate once per optimizer step (generation batch = train batch)
        num_iterations=1,
        num_generations=num_generations,
        max_completion_length=max_new_tokens,
        temperature=temperature, top_p=1.0, top_k=0,
        learning_rate=lr, lr_scheduler_type="constant_with_warmup" if warmup_steps else "constant",
        warmup_steps=warmup_steps, adam_beta1=adam_betas[0], adam_beta2=adam_betas[1], weight_decay=0.0,
        max_grad_norm=1.0,
        beta=beta, epsilon=epsilon_low, epsilon_high=epsilon_high, loss_type=loss_type, scale_rewards="group",
        use_vllm=False,
        bf16=False, fp16=False,  # TRL defaults bf16 to True: keep fp32 like the rtune side
        # TRL defaults (gradient) checkpointing to True, which would slow the step for no memory need;
        # transformers 5 calls it activation_checkpointing (the new name wins over TRL's default)
        activation_checkpointing=False,
        disable_dropout=True,
        use_cpu=True, dataloader_num_workers=0,
        report_to="none", logging_steps=1, save_strategy="no", disable_tqdm=True,
        seed=seed, max_steps=steps,
    )

    step_seconds: list[float] = []
    eval_reward: dict[int, float] = {}
    eval_seconds = [0.0]

    class Meter(TrainerCallback):
        """Times each optimizer step (between consecutive step ends) and runs the held-out eval outside that time."""

        def _eval(self, step):
            t = time.perf_counter()
            eval_reward[step] = greedy_reward(model, tokenizer, eval_prompts, max_new_tokens)
            eval_seconds[0] += time.perf_counter() - t

        def on_train_begin(self, args, state, control, **kw):
            self._eval(0)
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_seconds.append(time.perf_counter() - self.last)
            if state.global_step % eval_every_steps == 0 or state.global_step == steps:
                self._eval(state.global_step)
            self.last = time.perf_counter()  # after the eval, so it is not counted in the next step

    trainer = GRPOTrainer(model=model, reward_funcs=exact_match, args=config,
                          train_dataset=Dataset.from_list(train_prompts), processing_class=tokenizer,
                          callbacks=[Meter()])
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start - eval_seconds[0]

    by_step = {h["step"]: h["reward"] for h in trainer.state.log_history if "reward" in h}
    return {
        "trl_version": trl.__version__,
        "seconds_per_step": step_seconds,
        "train_reward": [by_step[s] for s in sorted(by_step)],
        "eval_reward": eval_reward,
        "total_seconds": total,  # trainer.train() wall time less the held-out eval time
        "eval_seconds": eval_seconds[0],
    }


if __name__ == "__main__":
    # Smoke run: a tiny GPT-2 and a byte-level BPE tokenizer built offline on random 2-digit additions
    import json
    import random
    import tempfile

    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    rng = random.Random(0)
    pairs = [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(80)]
    records = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in pairs]

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([r["prompt"] + r["answer"] for r in records], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")

    with tempfile.TemporaryDirectory() as model_dir:
        eos = tokenizer.eos_token_id
        GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_layer=2, n_embd=64, n_head=2,
                                   bos_token_id=eos, eos_token_id=eos)).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        result = run_trl(model_dir, records[:64], records[64:], steps=3, num_generations=4, prompts_per_step=4,
                         max_new_tokens=4, temperature=1.0, lr=1e-3, seed=0, eval_every_steps=2,
                         output_dir=f"{model_dir}/out")
    print(json.dumps(result, indent=2))
