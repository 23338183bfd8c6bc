"""rollout.engine=actors: a pool of generation actors beside the TorchTrainer workers, started by the driver.

Each actor holds the shared engine over a model built like the learner's (the same architecture, tokenizer, LoRA
layout and stop tokens); its weights are whatever the learner sent last (`load_weights`, a dict of trainable
parameters by name through Ray's object store; the learner sends them before the first rollout, so the actors never
generate with weights of their own). Actors outlive a worker-group restart: a resumed group finds them, sends its
weights, and goes on. The driver owns them and kills them when the run ends.

With generation.backend=vllm the actor runs vLLM on its GPU over the model's directory (model.name_or_path). Under
LoRA it is sent the adapters only, folds them into its own copy of the base weights (`merge_lora`), and loads the
merged tensors into vLLM by their Hugging Face names.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Mapping, Sequence

from rtune.config import RTuneConfig, from_dict, to_dict
from rtune.data.prepared import PreparedData

ACTOR_NAME = "rtune-rollout-{run}-{index}"


class RolloutActor:
    """One generation engine for RL rollouts (see the module docstring)."""

    def __init__(self, cfg_dict: Dict[str, Any], tokenizer_dir: str, end_of_turn: str | None, threads: int):
        import torch

        from rtune.engine import TransformersEngine
        from rtune.model import (apply_lora, build_model, disable_dropout, fit_embeddings, load_tokenizer_from,
                                 set_stop_tokens)

        torch.set_num_threads(max(1, threads))
        cfg = from_dict(cfg_dict)
        self.tokenizer = load_tokenizer_from(tokenizer_dir, trust_remote_code=False)
        self.backend = cfg.generation.backend
        if self.backend == "vllm":
            from rtune.engine_vllm import VLLMEngine

            self.engine = VLLMEngine.from_path(cfg.model.name_or_path,
                                               gpu_memory_utilization=cfg.generation.vllm_gpu_memory_utilization)
            self.peft = cfg.peft if cfg.peft.method == "lora" else None
            self.base = base_weights(cfg.model.name_or_path) if self.peft else None
            self.weights_version = -1
            return
        torch.manual_seed(cfg.seed)  # a base built from config is the learner's: LoRA's syncs send adapters only
        model = build_model(cfg.model, len(self.tokenizer), self.tokenizer.eos_token_id)
        new_token_ids = fit_embeddings(model, len(self.tokenizer))
        set_stop_tokens(model, self.tokenizer, end_of_turn)
        disable_dropout(model)
        if cfg.peft.method == "lora":
            model = apply_lora(model, cfg.peft, new_token_ids)
        self.model = model.eval().requires_grad_(False)
        self.trainable = {name for name, p in model.named_parameters()}
        self.engine = TransformersEngine(self.model, self.tokenizer, cfg.generation.max_batch_size)
        self.weights_version = -1

    def load_weights(self, weights: Mapping[str, Any], version: int) -> float:
        """The learner's weights (after `version` optimizer steps); returns the seconds it took."""
        started = time.perf_counter()
        if self.backend == "vllm":
            self.engine.load_weights(merge_lora(self.base, weights, self.peft) if self.peft else weights)
        else:
            unknown = sorted(set(weights) - self.trainable)
            if unknown:
                raise RuntimeError(f"rollout actor: weights it does not have: {unknown[:3]}")
            self.model.load_state_dict(dict(weights), strict=False)
        self.weights_version = version
        return time.perf_counter() - started

    def generate(self, prompt_ids: List[List[int]], sampling) -> tuple:
        """(completions per prompt, the weights version they came from, seconds)."""
        started = time.perf_counter()
        out = self.engine.generate(prompt_ids, sampling)
        return out, self.weights_version, time.perf_counter() - started

    def token_logprobs(self, input_ids: List[List[int]]):
        """log p(token t | tokens < t) of each row under the actor's weights (tests compare them with the learner's)."""
        import torch

        ids = torch.tensor(input_ids)
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits.float()
        return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def base_weights(model_dir: str) -> Dict[str, Any]:
    """The frozen base's tensors from a model directory's safetensors files (names as the checkpoint has them)."""
    from safetensors.torch import load_file

    out: Dict[str, Any] = {}
    for name in sorted(os.listdir(model_dir)):
        if name.endswith(".safetensors"):
            out.update(load_file(os.path.join(model_dir, name)))
    return out


def merge_lora(base: Mapping[str, Any], adapters: Mapping[str, Any], peft_cfg, fan_in_fan_out: bool = False
               ) -> Dict[str, Any]:
    """The weights LoRA changes, merged: W + (alpha / r) B A for every adapted module, by the base's names.

    adapters: the learner's trainable parameters (peft names: `base_model.model.<module>.lora_A.default.weight`).
    fan_in_fan_out: GPT-2's Conv1D stores W transposed."""
    scale = peft_cfg.alpha / peft_cfg.r
    merged = {}
    for key, a in adapters.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        b = adapters[key.replace(".lora_A.", ".lora_B.")]
        delta = (b.float() @ a.float()) * scale
        weight = base[f"{module}.weight"]
        merged[f"{module}.weight"] = (weight.float() + (delta.T if fan_in_fan_out else delta)).to(weight.dtype)
    return merged


def start_pool(cfg: RTuneConfig, prepared: PreparedData) -> List[Any]:
    """The run's rollout actors, started (or found again, by name, when the driver re-runs a run)."""
    import ray

    r = cfg.rollout
    options = {"num_cpus": r.cpus_per_actor, "num_gpus": r.gpus_per_actor, "max_restarts": 1, "lifetime": None}
    actor_class = ray.remote(RolloutActor)
    handles = []
    for index in range(r.num_actors):
        name = ACTOR_NAME.format(run=cfg.run_name, index=index)
        handles.append(actor_class.options(name=name, get_if_exists=True, **options).remote(
            to_dict(cfg), prepared.tokenizer_dir, prepared.end_of_turn, threads=max(1, int(r.cpus_per_actor))))
    ray.get([h.__ray_ready__.remote() for h in handles])  # a model that cannot be built fails here, on the driver
    return handles


def stop_pool(handles: Sequence[Any]) -> None:
    import ray

    for handle in handles:
        ray.kill(handle)

