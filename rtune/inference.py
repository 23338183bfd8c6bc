"""`rtune export` and `rtune generate`: any checkpoint (full, LoRA, DeepSpeed, FSDP, merged) as a model.

Every rtune checkpoint holds a loadable Hugging Face model: full strategies write a consolidated
`model.safetensors`; an FSDP checkpoint with sharded state (all but the last) is consolidated here from
every rank's shards; LoRA writes the adapter, and the base comes from the hub id in the run's config (or
`base_model/` for a base built from config).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Tuple

import yaml

from rtune.checkpoint import CONFIG, MARKER, has_model_weights, read_marker
from rtune.errors import UserError
from rtune.shards import consolidated_model, is_sharded

_SECRET_WORDS = ("token", "secret", "password", "api_key")


def load_model(path: str, trust_remote_code: bool = False) -> Tuple[Any, Any, str]:
    """(model, tokenizer, kind) for a checkpoint or model directory; kind is full, lora, deepspeed or fsdp."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    if not os.path.isdir(path):
        raise UserError(f"{path} does not exist: give a checkpoint_<step> directory or a model directory")
    if os.path.exists(os.path.join(path, MARKER)):
        read_marker(path)  # refuse a half-written or damaged checkpoint
    if os.path.exists(os.path.join(path, "adapter_config.json")):
        from peft import PeftModel

        base = _lora_base(path)
        base_model = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=trust_remote_code)
        model, kind = PeftModel.from_pretrained(base_model, path), "lora"
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


def _lora_base(path: str) -> str:
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
    if kind == "lora":
        model = model.merge_and_unload()
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
        f"- **Method:** {'LoRA (merged)' if kind == 'lora' else 'full fine-tune'}, strategy "
        f"{(config.get('strategy') or {}).get('name', 'ddp')}, {config.get('num_workers')} workers",
        f"- **Steps:** {marker.get('step')}",
        f"- **Eval loss:** {eval_loss:.4f}" if isinstance(eval_loss, (int, float)) else "- **Eval loss:** n/a",
        "", "## Resolved config", "", "```yaml", yaml.safe_dump(_scrub(config), sort_keys=False).rstrip(), "```", "",
    ]
    return "\n".join(lines)


def generate(path: str, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
             seed: int = 0, chat: bool = False, system: str = "") -> str:
    """Sample a continuation: greedy at temperature 0, else temperature + nucleus (top-p) sampling.

    chat: wrap the prompt as a user turn (after an optional system turn) with the checkpoint's chat
    template and return only the reply, which ends at the template's end-of-turn token.
    """
    import torch

    model, tokenizer, _ = load_model(path)
    torch.manual_seed(seed)
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(f"{path} has no chat template (it was not trained on a chat format): drop chat=true")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    else:
        inputs = tokenizer(prompt, return_tensors="pt")
    sampling = temperature > 0
    kwargs = {"do_sample": True, "temperature": temperature, "top_p": top_p} if sampling else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             **kwargs)
    if chat:
        return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return tokenizer.decode(out[0], skip_special_tokens=True)


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
