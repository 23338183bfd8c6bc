"""`rtune export` and `rtune generate`: any checkpoint (full, LoRA, DeepSpeed, FSDP, merged) as a model.

Every rtune checkpoint holds a loadable Hugging Face model: full strategies write a consolidated
`model.safetensors`; an FSDP checkpoint with sharded state (all but the last) is consolidated here from
every rank's shards; LoRA writes the adapter, and the base comes from the hub id in the run's config (or
`base_model/` for a base built from config).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import yaml

from rtune.checkpoint import CONFIG, MARKER, has_model_weights, read_marker
from rtune.engine import Engine, Sampling, TransformersEngine, encode_prompts
from rtune.errors import UserError
from rtune.model import hub_error
from rtune.shards import consolidated_model, is_sharded

_SECRET_WORDS = ("token", "secret", "password", "api_key")
_METHODS = {"lora": "LoRA (merged)", "qlora": "QLoRA (merged into the dequantized 4-bit base, bf16)"}


def load_model(path: str, trust_remote_code: bool = False) -> Tuple[Any, Any, str]:
    """(model, tokenizer, kind) for a checkpoint or model directory; kind is full, lora, qlora, deepspeed or fsdp."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    if not os.path.isdir(path):
        if _looks_like_hub_id(path):
            return _hub_model(path, trust_remote_code)
        raise UserError(f"{path} does not exist: give a checkpoint_<step> directory or a model directory")
    if os.path.exists(os.path.join(path, MARKER)):
        read_marker(path)  # refuse a half-written or damaged checkpoint
    if os.path.exists(os.path.join(path, "adapter_config.json")):
        from peft import PeftModel

        base = lora_base(path)
        if is_qlora(path):  # the base the adapter was trained
            from rtune.model import nf4_valued  # against: its NF4 values

            base_model, kind = nf4_valued(base, trust_remote_code=trust_remote_code), "qlora"
        else:
            base_model, kind = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=trust_remote_code), "lora"
        model = PeftModel.from_pretrained(base_model, path)
    elif os.path.exists(os.path.join(path, "config.json")) and not has_model_weights(path) and is_sharded(path):
        model, kind = consolidated_model(path, trust_remote_code=trust_remote_code), "fsdp"  # from every rank's shards
    elif os.path.exists(os.path.join(path, "config.json")):
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code)
        kind = "deepspeed" if os.path.isdir(os.path.join(path, "deepspeed")) else "full"
    else:
        raise UserError(f"{path} is not an rtune checkpoint or a Hugging Face model directory "
                        "(no config.json or adapter_config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return model.eval(), tokenizer, kind


def _looks_like_hub_id(name: str) -> bool:
    return not name.startswith(("/", ".", "~")) and name.count("/") == 1 and not name.endswith("/")


def _hub_model(name: str, trust_remote_code: bool) -> Tuple[Any, Any, str]:
    """A model on the Hugging Face Hub (or in its local cache), with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise hub_error("model", name, err) from None
    return model.eval(), tokenizer, "full"


def lora_base(path: str) -> str:
    local = os.path.join(path, "base_model")
    if os.path.isdir(local):
        return local
    config = _run_config(path)
    base = (config.get("model") or {}).get("name_or_path")
    if not base:
        with open(os.path.join(path, "adapter_config.json")) as f:
            base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{path}: cannot tell which base model this LoRA adapter belongs to")
    return base


def is_qlora(path: str) -> bool:
    """Whether a checkpoint holds a QLoRA adapter (trained against a 4-bit base)."""
    return os.path.isdir(path) and (_run_config(path).get("peft") or {}).get("method") == "qlora"


def refuse_qlora_on_vllm(paths) -> None:
    """vLLM would put a QLoRA adapter on the unquantized base, not the 4-bit one it was trained against."""
    for path in paths:
        if is_qlora(path):
            raise UserError(f"{path} is a QLoRA checkpoint, trained against a 4-bit base that the vllm backend does "
                            f"not rebuild: `python -m rtune export {path} <out_dir>` and serve the merged model with "
                            "vllm, or use the transformers backend")


def _run_config(path: str) -> Dict[str, Any]:
    config_path = os.path.join(path, CONFIG)
    if not os.path.exists(config_path):
        return {}
    with open(config_path) as f:
        return json.load(f)


def _scrub(tree: Any) -> Any:
    """Drop anything secret-looking before it reaches a model card."""
    if isinstance(tree, dict):
        return {k: _scrub(v) for k, v in tree.items() if not any(w in k.lower() for w in _SECRET_WORDS)}
    return tree


def export(checkpoint: str, out_dir: str) -> str:
    """Write a standalone HF model dir (LoRA merged into its base) with tokenizer and model card."""
    if not os.path.exists(os.path.join(checkpoint, MARKER)):
        raise UserError(f"{checkpoint} is not an rtune checkpoint (no {MARKER}): export takes a "
                        "<storage_path>/<run_name>/checkpoint_<step> directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise UserError(f"{out_dir} exists and is not empty: choose a new output directory")
    model, tokenizer, kind = load_model(checkpoint)
    if kind in ("lora", "qlora"):
        model = model.merge_and_unload()
    if kind == "qlora":  # the dequantized base with the adapter merged in, in QLoRA's compute dtype
        import torch

        model = model.to(torch.bfloat16)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    marker = read_marker(checkpoint)
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(model_card(_run_config(checkpoint), marker, kind))
    return out_dir


def model_card(config: Dict[str, Any], marker: Dict[str, Any], kind: str) -> str:
    model, data = config.get("model") or {}, config.get("data") or {}
    base = model.get("name_or_path") or f"{(model.get('from_config') or {}).get('model_type', '?')} built from config"
    eval_loss = (marker.get("metrics") or {}).get("eval_loss")
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags: [rtune, causal-lm]", "---", "",
        f"# {config.get('run_name', 'rtune model')}", "",
        "Fine-tuned with rtune on Ray Train.", "",
        f"- **Base model:** {base}",
        f"- **Data:** {data.get('path')} (data_dir={data.get('data_dir')}, field `{data.get('text_field')}`, "
        f"seq_len {data.get('seq_len')})",
        f"- **Method:** {_METHODS.get(kind, 'full fine-tune')}, strategy "
        f"{(config.get('strategy') or {}).get('name', 'ddp')}, {config.get('num_workers')} workers",
        f"- **Steps:** {marker.get('step')}",
        f"- **Eval loss:** {eval_loss:.4f}" if isinstance(eval_loss, (int, float)) else "- **Eval loss:** n/a",
        "", "## Resolved config", "", "```yaml", yaml.safe_dump(_scrub(config), sort_keys=False).rstrip(), "```", "",
    ]
    return "\n".join(lines)


def load_engine(path: str, backend: str = "transformers", max_batch_size: int = 16, device: Optional[str] = None,
                trust_remote_code: bool = False, **vllm_options) -> Engine:
    """The generation engine (engine.py) over a checkpoint, an exported model directory or a hub id."""
    if backend == "vllm":
        from rtune.engine_vllm import VLLMEngine  # an optional extra: imported only when asked for

        refuse_qlora_on_vllm([path])

        base = lora_base(path) if os.path.exists(os.path.join(path, "adapter_config.json")) else None
        return VLLMEngine.from_path(path, base, trust_remote_code=trust_remote_code, **vllm_options)
    if backend != "transformers":
        raise UserError(f"unknown generation backend {backend!r}: use transformers or vllm")
    import torch

    model, tokenizer, _ = load_model(path, trust_remote_code=trust_remote_code)
    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return TransformersEngine(model.to(target), tokenizer, max_batch_size=max_batch_size)


def generate(path: str, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
             top_k: int = 0, n: int = 1, seed: int = 0, chat: bool = False, system: str = "") -> str:
    """One prompt through the engine: greedy at temperature 0, else temperature / top-p / top-k sampling.

    Plain prompts print the prompt and its continuation; chat=true wraps the prompt as a user turn (after an
    optional system turn) with the checkpoint's chat template and prints only the reply. n > 1: each completion
    under a `--- sample j ---` line."""
    engine = load_engine(path)
    ids = encode_prompts(engine.tokenizer, [prompt], chat, system)
    completions = engine.generate(ids, Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                                top_k=top_k, n=n, seed=seed))[0]
    texts = [c.text if chat else prompt + c.text for c in completions]
    return texts[0] if n == 1 else "\n".join(f"--- sample {j} ---\n{text}" for j, text in enumerate(texts))


def parse_kv(args: List[str], allowed: Dict[str, type]) -> Dict[str, Any]:
    """`key=value` arguments for generate, typed and checked (UserError names the accepted keys)."""
    values: Dict[str, Any] = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        if not sep or key not in allowed:
            raise UserError(f"unexpected argument {arg!r}: generate takes {', '.join(f'{k}=' for k in allowed)}")
        try:
            values[key] = allowed[key](raw)
        except ValueError:
            raise UserError(f"{key}={raw!r} is not a valid {allowed[key].__name__}") from None
    return values
