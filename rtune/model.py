"""Model and tokenizer: from a hub id, a local directory, or (tiny models) built from config.

A model built from config has no tokenizer of its own, so rtune trains a byte-level BPE on the
training documents with `tokenizers`, caches it by content, and saves it with every checkpoint:
the run needs no download and its checkpoints load with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Iterable, List, Optional, Sequence

from rtune.checkpoint import has_model_weights
from rtune.config import ModelConfig, PeftConfig
from rtune.errors import UserError
from rtune.shards import SHARD_DIR

EOS_TOKEN = "<|endoftext|>"


def hub_error(what: str, name: str, err: Exception) -> UserError:
    """Turn a loading failure into one line that says what to do about it."""
    text = str(err)
    if "trust_remote_code" in text or "contains custom code" in text:
        return UserError(f"{what} {name!r} needs its own Python code to load: set model.trust_remote_code=true "
                         "only if you trust that repository")
    if os.path.isdir(name):
        return UserError(f"cannot load {what} from local directory {name}: {text.splitlines()[0]}")
    kind = type(err).__name__
    if "GatedRepo" in kind or "gated repo" in text.lower():
        return UserError(f"{what} {name!r} is gated on the Hugging Face Hub: accept its license on the model page, "
                         "then export HF_TOKEN=<a token with access> (it is read from the environment only)")
    if "RepositoryNotFound" in kind or "is not a local folder and is not a valid model identifier" in text:
        return UserError(f"{what} {name!r} is neither a local directory nor a model on the Hugging Face Hub: "
                         "check model.name_or_path")
    return UserError(f"cannot load {what} {name!r}: the Hugging Face Hub is unreachable (offline?) and it is not in "
                     f"the local cache; use model=tiny_gpt2 for an offline run, or model.name_or_path=<local dir>")


def load_model_config(cfg: ModelConfig):
    """The model's `PretrainedConfig`: fetched (or read from cache/dir) or built from `from_config`."""
    from transformers import CONFIG_MAPPING, AutoConfig

    if cfg.name_or_path is None:
        fields = dict(cfg.from_config)
        model_type = fields.pop("model_type")
        if model_type not in CONFIG_MAPPING:
            raise UserError(f"unknown model.from_config.model_type {model_type!r}")
        return CONFIG_MAPPING[model_type](**fields)
    _refuse_sharded_state(cfg.name_or_path)
    try:
        return AutoConfig.from_pretrained(cfg.name_or_path, revision=cfg.revision,
                                          trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as err:
        raise hub_error("model", cfg.name_or_path, err) from None


def _refuse_sharded_state(name_or_path: str) -> None:
    """An intermediate sharded FSDP checkpoint has no model files: say how to make one."""
    if os.path.isdir(os.path.join(name_or_path, SHARD_DIR)) and not has_model_weights(name_or_path):
        raise UserError(f"{name_or_path} holds sharded FSDP training state, not a model: consolidate it with "
                        f"`python -m rtune export {name_or_path} <out_dir>` and set model.name_or_path=<out_dir>")


def max_context(model_config) -> Optional[int]:
    """The longest sequence the model's position embeddings allow (None if unbounded/unknown)."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(model_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def tokenizer_fingerprint(tokenizer) -> str:
    """A content hash of a fast tokenizer: the cache key for tokenized data."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or tokenizer._tokenizer
    digest = hashlib.sha256(backend.to_str().encode())
    digest.update(str(tokenizer.eos_token_id).encode())
    digest.update(str(getattr(tokenizer, "chat_template", None)).encode())
    return digest.hexdigest()[:16]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str):
    """Train a GPT-2-style byte-level BPE on `texts` and save it as a fast HF tokenizer in out_dir."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS_TOKEN])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS_TOKEN,
                                        eos_token=EOS_TOKEN, unk_token=EOS_TOKEN, pad_token=EOS_TOKEN,
                                        model_max_length=1_000_000)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    tokenizer.save_pretrained(tmp)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    try:
        os.replace(tmp, out_dir)  # atomic: a concurrent worker never sees half a tokenizer
    except OSError:  # another process got there first with the same content
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer_from(out_dir, trust_remote_code=False)


def load_tokenizer_from(name_or_path: str, trust_remote_code: bool, revision: Optional[str] = None):
    """AutoTokenizer with a pad token (causal LMs often have none; we pad with EOS)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision,
                                                  trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise hub_error("tokenizer", name_or_path, err) from None
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"tokenizer {name_or_path!r} has no fast (Rust) version; rtune needs one")
    if tokenizer.eos_token_id is None:
        raise UserError(f"tokenizer {name_or_path!r} has no EOS token, needed to separate packed documents")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def config_for_tokenizer(cfg: ModelConfig, vocab_size: int, eos_token_id: Optional[int]):
    """A from-config model's `PretrainedConfig`, sized to the trained tokenizer."""
    model_config = load_model_config(cfg)
    model_config.vocab_size = vocab_size
    if eos_token_id is not None:  # the trained tokenizer's EOS, not GPT-2's 50256
        model_config.bos_token_id = model_config.eos_token_id = eos_token_id
    return model_config


def build_model(cfg: ModelConfig, vocab_size: int, eos_token_id: Optional[int] = None,
                checkpoint_dir: Optional[str] = None, on_meta: bool = False):
    """The model to train: from a checkpoint when resuming, else pretrained or freshly initialised.

    Call under a fixed torch seed: every rank then builds the same initial weights. on_meta: the architecture only,
    on the meta device (no memory), for a strategy that loads each rank's slices after sharding (model_init.py);
    `model.rtune_weights_dir` then says where the weights are (None: initialise from config, or a sharded
    checkpoint's own files).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rtune.model_init import init_from_config

    kwargs = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    source = checkpoint_dir if checkpoint_dir is not None else cfg.name_or_path
    if source is None:
        model_config = config_for_tokenizer(cfg, vocab_size, eos_token_id)
    elif on_meta or (checkpoint_dir is not None and not has_model_weights(checkpoint_dir)):
        try:  # the architecture alone (a sharded FSDP checkpoint's weights are its shards: the strategy loads them)
            model_config = AutoConfig.from_pretrained(source, trust_remote_code=cfg.trust_remote_code,
                                                      **({} if checkpoint_dir else {"revision": cfg.revision}))
        except (OSError, ValueError) as err:
            raise hub_error("model", source, err) from None
    if on_meta:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config, **kwargs)
        model.rtune_weights_dir = None if source is None else weights_dir_of(source, cfg.revision, checkpoint_dir)
        return model
    if source is None:
        return init_from_config(model_config, **kwargs)
    if checkpoint_dir is not None and not has_model_weights(checkpoint_dir):
        return AutoModelForCausalLM.from_config(model_config, **kwargs)
    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype="float32",
                                                    **({} if checkpoint_dir else {"revision": cfg.revision}), **kwargs)
    except (OSError, ValueError) as err:
        raise hub_error("model", source, err) from None


def require_bitsandbytes() -> None:
    """peft=qlora's quantization library, an optional extra: one line when it is missing."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("peft=qlora needs bitsandbytes: pip install 'rtune[qlora]' (bitsandbytes>=0.50, which runs "
                        "on CPUs too), or use peft=lora") from None


def nf4_config(compute_dtype):
    """QLoRA's quantization: 4-bit NormalFloat weights with double quantization (the block scales quantized too,
    ~0.5 bytes a parameter in all), dequantized to `compute_dtype` for each matmul."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_quantized(source: str, compute_dtype, device, revision: Optional[str] = None,
                   trust_remote_code: bool = False, **kwargs):
    """A pretrained model with its linear layers quantized to NF4 tensor by tensor as they load (never whole in a
    wider dtype); the output head, embeddings and norms stay in `compute_dtype`."""
    import torch
    from transformers import AutoModelForCausalLM

    require_bitsandbytes()
    device = torch.device(device)
    try:
        return AutoModelForCausalLM.from_pretrained(
            source, quantization_config=nf4_config(compute_dtype), dtype=compute_dtype, revision=revision,
            device_map={"": (device.index or 0) if device.type == "cuda" else device.type},
            trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as err:
        raise hub_error("model", source, err) from None


def nf4_valued(source: str, trust_remote_code: bool = False):
    """The base a QLoRA adapter was trained against, as a plain fp32 model of its own architecture (GPT-2 keeps its
    Conv1D layers): each weight training quantized holds its NF4 value, quantized as training quantized it and
    dequantized; the other tensors as saved. Export merges into it; generate adapts it."""
    import torch
    from bitsandbytes.functional import dequantize_4bit
    from bitsandbytes.nn import Linear4bit
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    quantized = load_quantized(source, torch.float32, "cpu", trust_remote_code=trust_remote_code)
    plain = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, trust_remote_code=trust_remote_code)
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if isinstance(module, Linear4bit):
                weight = dequantize_4bit(module.weight.data, module.weight.quant_state).float()
                target = plain.get_submodule(name)
                target.weight.copy_(weight.T if isinstance(target, Conv1D) else weight)  # Conv1D stores (in, out)
    del quantized
    return plain


def weights_dir_of(source: str, revision: Optional[str], checkpoint_dir: Optional[str]) -> Optional[str]:
    """The local directory holding a model's safetensors: the directory itself, or the hub snapshot (downloaded
    once, or found in the cache offline). None where there are no safetensors weights (a sharded checkpoint)."""
    if os.path.isdir(source):
        return source if has_model_weights(source) else None
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(source, revision=revision, allow_patterns=["*.safetensors", "*.json"])
    except Exception as err:  # noqa: BLE001 - offline without a cache, a typo: the same line as from_pretrained's
        raise hub_error("model", source, err) from None


def fit_embeddings(model, vocab_size: int) -> List[int]:
    """Grow the embeddings to the tokenizer's vocabulary (tokens a chat template added); returns the new ids.

    New rows start at the mean of the old ones (transformers' default), a neutral start for a new token.
    """
    rows = model.get_input_embeddings().num_embeddings  # (weight.shape is a partition under ZeRO-3)
    if rows >= vocab_size:
        return []
    model.resize_token_embeddings(vocab_size)
    return list(range(rows, vocab_size))


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, tied weights counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        numel = getattr(p, "ds_numel", None) or p.numel()  # ZeRO-3 leaves only a local partition in p
        if getattr(p, "quant_state", None) is not None:  # a 4-bit weight packs two values a byte
            numel = math.prod(p.quant_state.shape)
        total += numel
        trainable += numel if p.requires_grad else 0
    return trainable, total


def frozen_bytes(model) -> int:
    """Bytes this process holds of the weights that do not train: its local shards under FSDP2; a 4-bit weight's
    packed values and its quantization state (block scales, themselves quantized)."""
    seen, total = set(), 0
    for param in model.parameters():
        if param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        local = param.to_local() if hasattr(param, "to_local") else param
        total += local.numel() * local.element_size()
        state = getattr(param, "quant_state", None)
        while state is not None:  # bitsandbytes' QuantState, nested under double quantization
            total += sum(t.numel() * t.element_size() for t in vars(state).values() if hasattr(t, "element_size"))
            state = getattr(state, "state2", None)
    return total


# Default LoRA targets per architecture: attention and MLP projections (what QLoRA and most recipes
# adapt; the LoRA paper's attention-only choice leaves quality on the table for SFT).
_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"], "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "bloom": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"], "opt": ["q_proj", "k_proj", "v_proj", "out_proj",
                                                                          "fc1", "fc2"],
    "starcoder2": ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"],
    **{t: _LLAMA_LIKE for t in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                                "olmo", "olmo2", "smollm3")},
}
ALL_LINEAR = "all-linear"


def adaptable_modules(model) -> List[str]:
    """Names (last component) of the Linear / Conv1D layers LoRA can adapt."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return sorted({name.split(".")[-1] for name, module in model.named_modules()
                   if isinstance(module, (torch.nn.Linear, Conv1D))})


def lora_targets(peft: PeftConfig, model):
    """The modules to adapt, checked against the model; UserError lists the candidates.

    `all-linear` is passed to peft as it is (every Linear/Conv1D but the output head)."""
    if peft.target_modules == ALL_LINEAR:
        return ALL_LINEAR
    candidates = adaptable_modules(model)
    model_type = getattr(model.config, "model_type", "?")
    targets = list(peft.target_modules) if peft.target_modules else LORA_TARGETS.get(model_type)
    if not targets:
        raise UserError(f"no default LoRA targets for model_type {model_type!r}: set peft.target_modules=[...] "
                        f"from: {', '.join(candidates)}, or peft.target_modules=all-linear")
    missing = [t for t in targets if t not in candidates]
    if missing:
        raise UserError(f"peft.target_modules {missing} not found in the model; candidates: {', '.join(candidates)}"
                        " (or peft.target_modules=all-linear)")
    return targets


def check_lora_targets(cfg: ModelConfig, peft: PeftConfig, model_config) -> None:
    """Driver-side check on a weightless (meta-device) copy of the model: no memory, no download."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model_config, trust_remote_code=cfg.trust_remote_code)
    lora_targets(peft, skeleton)


def cast_frozen(model, dtype) -> None:
    """Every parameter that does not train, in `dtype` (tied weights are one parameter: cast once)."""
    for param in model.parameters():
        if not param.requires_grad and param.dtype != dtype and param.is_floating_point():
            param.data = param.data.to(dtype)


def apply_lora(model, peft: PeftConfig, new_token_ids: Sequence[int] = ()):
    """Wrap in a peft LoRA model: base weights frozen, only adapters train.

    new_token_ids: embedding rows the pretrained model did not have (a chat template's special tokens).
    Frozen, they would stay at their initial values; peft trains just those rows.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout,
                        target_modules=lora_targets(peft, model), task_type="CAUSAL_LM",
                        trainable_token_indices=list(new_token_ids) or None,
                        fan_in_fan_out=_has_conv1d(model))  # GPT-2's (in, out) weights; 4-bit ones are Linear
    import torch

    from rtune.model_init import init_lora

    # peft's construction draws are not kept (they depend on where modules are built: a meta build draws none);
    # the adapters are then initialised in module order from the stream as it stands, here or after sharding
    with torch.random.fork_rng(devices=[]):
        wrapped = get_peft_model(model, config)
    init_lora(wrapped)
    return wrapped


def _has_conv1d(model) -> bool:
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(module, Conv1D) for module in model.modules())


def disable_dropout(model) -> None:
    """Dropout off everywhere (objectives that compare forward passes, and generation actors)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for key in ("attention_dropout", "attn_pdrop"):  # attention kernels read it from the config
        if hasattr(model.config, key):
            setattr(model.config, key, 0.0)


def set_stop_tokens(model, tokenizer, end_of_turn: Optional[str]) -> None:
    """Generation stops at EOS and at the chat template's end-of-turn token (saved with every checkpoint)."""
    if not end_of_turn:
        return
    stop = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(end_of_turn)]
    model.generation_config.eos_token_id = sorted(set(stop))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
