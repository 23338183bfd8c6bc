"""`rtune serve serve.backend=vllm`: the model on vLLM through Ray's own OpenAI server (`ray.serve.llm`, GPU).

The same command, model argument, adapters and `serve.*` settings as the transformers backend, translated into one
`LLMConfig`: replicas or autoscaling, vLLM's continuous batching (`max_num_seqs` = serve.max_batch_size), the
context cap, and LoRA adapters (vLLM's multi-LoRA), which ray.serve.llm loads from one folder of adapters: rtune links
each run's checkpoint into such a folder. Clients name an adapter `<base id>:<adapter name>` (ray.serve.llm's
convention). ray.serve.llm's server checks no API key, so this backend keeps to 127.0.0.1 without one.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict

from rtune.config import RTuneConfig
from rtune.errors import UserError
from rtune.inference import refuse_qlora_on_vllm


def llm_config(cfg: RTuneConfig, model_path: str, name: str, adapters: Dict[str, str], adapter_dir: str
               ) -> Dict[str, Any]:
    """The keyword arguments of ray.serve.llm's LLMConfig for this model (a plain dict: checked without vLLM)."""
    s = cfg.serve
    refuse_qlora_on_vllm([model_path, *adapters.values()])
    if s.api_key_env:
        raise UserError("serve.backend=vllm serves through ray.serve.llm, which checks no API key: drop "
                        "serve.api_key_env and keep serve.host=127.0.0.1 (put an authenticating gateway in front), or "
                        "use serve.backend=transformers")
    deployment: Dict[str, Any] = {"max_ongoing_requests": s.max_concurrent_requests}
    if s.max_replicas is not None:
        deployment["autoscaling_config"] = {"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
                                            "target_ongoing_requests": s.target_ongoing_requests}
    else:
        deployment["autoscaling_config"] = {"min_replicas": s.num_replicas, "max_replicas": s.num_replicas}
    config: Dict[str, Any] = {
        "model_loading_config": {"model_id": name, "model_source": model_path},
        "engine_kwargs": {"max_num_seqs": s.max_batch_size, "trust_remote_code": False,
                          "max_model_len": s.max_prompt_tokens + s.max_tokens},
        "deployment_config": deployment,
    }
    if adapters:
        config["lora_config"] = {"dynamic_lora_loading_path": adapter_dir,
                                 "max_num_adapters_per_replica": s.max_adapters_per_replica}
        config["engine_kwargs"].update(enable_lora=True, max_loras=s.max_adapters_per_replica)
    return config


def link_adapters(adapters: Dict[str, str]) -> str:
    """One folder holding each adapter checkpoint under its served name (what ray.serve.llm loads adapters from)."""
    folder = tempfile.mkdtemp(prefix="rtune-serve-adapters-")
    for adapter, path in adapters.items():
        os.symlink(path, os.path.join(folder, adapter))
    return folder


def build_vllm_app(cfg: RTuneConfig, model_path: str, name: str, adapters: Dict[str, str]):
    """The ray.serve.llm application (not started); one line when vLLM is missing."""
    config = llm_config(cfg, model_path, name, adapters, link_adapters(adapters) if adapters else "")
    try:
        from ray.serve.llm import LLMConfig, build_openai_app
    except ImportError:
        raise UserError("serve.backend=vllm needs vLLM: pip install 'rtune[vllm]' (GPU machines), or use "
                        "serve.backend=transformers") from None
    return build_openai_app({"llm_configs": [LLMConfig(**config)]})
