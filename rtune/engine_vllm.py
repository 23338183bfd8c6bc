"""The vLLM backend of the generation engine (`generation.backend=vllm`; GPU; `pip install 'rtune[vllm]'`).

The same interface and conventions as `engine.TransformersEngine` (see engine.py), with these differences, all
vLLM's own: a request's `seed` seeds its n completions together (the same prompt and seed give the same
completions, but not the transformers backend's); log-probs are vLLM's raw log-probs (`logprobs_mode=raw_logprobs`
where the installed vLLM has it: the model's distribution before temperature and filtering, as ours). A LoRA
checkpoint is served as an adapter on its base model (vLLM's LoRA support), not merged.

Written against vLLM's offline `LLM` API and checked by rtune's tests only as far as a machine without a GPU
allows (the config composes and validates; the import is refused in one line where vLLM is missing): no figure
in rtune's docs comes from this backend unless it says it was measured.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Mapping, Optional, Sequence

from rtune.engine import Completion, Sampling
from rtune.errors import UserError


def _vllm():
    try:
        import vllm
    except ImportError:
        raise UserError("generation.backend=vllm needs vLLM: pip install 'rtune[vllm]' (GPU machines), or use "
                        "generation.backend=transformers") from None
    return vllm


class VLLMEngine:
    def __init__(self, llm, tokenizer, lora_path: Optional[str] = None):
        self.llm, self.tokenizer, self.lora_path = llm, tokenizer, lora_path

    @classmethod
    def from_path(cls, path: str, base: Optional[str] = None, trust_remote_code: bool = False,
                  gpu_memory_utilization: float = 0.85, dtype: str = "auto") -> VLLMEngine:
        """A model directory or hub id; a LoRA checkpoint (adapter_config.json) with its base model's path."""
        vllm = _vllm()
        model, lora_path, max_lora_rank = path, None, 16
        adapter_config = os.path.join(path, "adapter_config.json")
        if os.path.exists(adapter_config):
            with open(adapter_config) as f:
                max_lora_rank = max(16, int(json.load(f).get("r", 16)))
            model, lora_path = base, path
        options = {"logprobs_mode": "raw_logprobs"} if "logprobs_mode" in _llm_parameters(vllm) else {}
        llm = vllm.LLM(model=model, tokenizer=path if lora_path else model, dtype=dtype,
                       gpu_memory_utilization=gpu_memory_utilization, trust_remote_code=trust_remote_code,
                       enable_lora=lora_path is not None, max_lora_rank=max_lora_rank, **options)
        return cls(llm, llm.get_tokenizer(), lora_path)

    def generate(self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling) -> List[List[Completion]]:
        vllm = _vllm()
        from vllm.inputs import TokensPrompt

        sampling.check()
        params = vllm.SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                     top_k=sampling.top_k or -1, max_tokens=sampling.max_new_tokens,
                                     stop=list(sampling.stop), stop_token_ids=list(sampling.stop_token_ids),
                                     seed=sampling.seed, logprobs=0)
        lora = None
        if self.lora_path:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("rtune-adapter", 1, self.lora_path)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], params,
                                    lora_request=lora, use_tqdm=False)
        return [[self._completion(c) for c in out.outputs] for out in outputs]

    @staticmethod
    def _completion(c: Any) -> Completion:
        token_ids = list(c.token_ids)
        logprobs = [float(step[token].logprob) for step, token in zip(c.logprobs or [], token_ids)]
        return Completion(token_ids, c.text, logprobs, c.finish_reason or "length", c.stop_reason)

    def load_weights(self, state: Mapping[str, Any]) -> None:
        """New weights into the running engine (the learner's, for RL rollouts): on every worker of the engine."""
        weights = list(state.items())

        def load(worker):
            worker.model_runner.model.load_weights(weights)

        if hasattr(self.llm, "collective_rpc"):
            self.llm.collective_rpc(load)
        else:  # older vLLM: the model lives in the engine's only worker
            self.llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights(state.items())


def _llm_parameters(vllm) -> Sequence[str]:
    import inspect

    try:
        from vllm.engine.arg_utils import EngineArgs

        return list(inspect.signature(EngineArgs).parameters)
    except (ImportError, TypeError, ValueError):
        return list(inspect.signature(vllm.LLM).parameters)
