"""How a model gets its weights without any process holding it whole: built on the meta device, (sharded,) then
given memory, each rank its own slices. FSDP2 loads this way (rtune/worker/strategy.py); a model built from config
is initialised the same way on one process too (`init_from_config`), so both give the same weights.

    skeleton = build_model(..., on_meta=True)           # the architecture, no memory (rtune/model.py)
    fully_shard(...)                                    # the strategy's units, on meta
    materialize(module, device, source)                 # each rank: its slices, from one of
        source.weights_dir  a directory of safetensors (hub snapshot, exported model, full checkpoint): each rank
                            reads its rows of each tensor (safetensors slices; the file is never read whole)
        source = None       a model built from config: transformers' own initialisation replayed module by module
                            in its order (one module's tensors whole at a time), the same weights as
                            `rtune.model.init_from_config` builds on one process (tested bit for bit)
    load_adapter / init_lora                            # LoRA's adapters: the resumed checkpoint's, or peft's init

A module's parameters are sharded on dim 0 in torch.chunk's pieces (FSDP2's Shard(0)): a rank's rows are
chunk(rank). Every rank runs every step here (the replay gathers collectively), in the same order.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch


def _rows(param, full_rows: int) -> Tuple[int, int]:
    """(start, stop) of this rank's rows of a Shard(0) parameter with `full_rows` rows."""
    mesh = param.device_mesh
    ranks, rank = mesh.size(), mesh.get_local_rank()
    step = -(-full_rows // ranks)  # torch.chunk: ceil-sized pieces, the last ones shorter or empty
    start = min(rank * step, full_rows)
    return start, min(start + step, full_rows)


def assign(param, full: torch.Tensor) -> None:
    """Copy this rank's rows of `full` (the whole tensor) into a parameter, sharded or not."""
    with torch.no_grad():
        if hasattr(param, "to_local"):
            start, stop = _rows(param, full.shape[0])
            local = param.to_local()
            local.copy_(full[start:stop].to(local.dtype))
        else:
            param.copy_(full.to(param.dtype))


def _with_whole(params: Iterable[Tuple[torch.nn.Module, str]], fn: Callable[[], None],
                discard: Callable[[torch.nn.Module, torch.nn.Parameter], bool] = lambda owner, param: False) -> None:
    """Run fn with these (module, name) parameters swapped for whole plain copies, then write the rows back;
    what `discard(owner, param)` says is written to a throwaway copy (its draws still taken)."""
    swapped: List[Tuple[torch.nn.Module, str, torch.nn.Parameter, bool]] = []
    for owner, name in params:
        param = owner._parameters[name]
        throwaway = discard(owner, param)
        if hasattr(param, "full_tensor") or throwaway:
            # initialised in fp32 whatever the parameter keeps (a bf16 base): the values the plain path casts
            whole = param.full_tensor().detach() if hasattr(param, "full_tensor") else param.detach().clone()
            owner._parameters[name] = torch.nn.Parameter(whole.float() if whole.is_floating_point() else whole,
                                                         requires_grad=param.requires_grad)
            swapped.append((owner, name, param, throwaway))
    try:
        fn()
    finally:
        for owner, name, param, throwaway in swapped:
            if not throwaway:
                assign(param, owner._parameters[name].data)
            owner._parameters[name] = param


def _own_and_childrens(module) -> List[Tuple[torch.nn.Module, str]]:
    """What transformers' _init_weights(module) may write: its own parameters and its direct children's (a LoRA
    wrapper's: its base layer's, which it reaches through the wrapper)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers.modeling_utils import PreTrainedModel

    seen, out = set(), []
    for owner in [module, *module.children()]:
        if owner is not module and isinstance(owner, PreTrainedModel):
            continue
        if isinstance(owner, BaseTunerLayer):
            owner = owner.get_base_layer()
        for name, param in owner.named_parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                out.append((owner, name))
    return out


def replay_init(model, only_with_buffers: bool = False,
                before: Optional[Callable[[List[Tuple[torch.nn.Module, str]]], None]] = None,
                after: Optional[Callable[[torch.nn.Module], None]] = None) -> None:
    """transformers' initialize_weights (smart_apply order, each module once), on sharded parameters: each module's
    parameters whole while it is initialised. only_with_buffers: just the modules that own buffers (rotary
    frequencies), whose values the meta device lost; their parameters are loaded afterwards. before(params): called
    with the (module, name) parameters a module's initialisation may write, just before it; after(module): once a
    module and everything under it is initialised (its children's own parameters are then final: only a module
    and its parent write a parameter)."""
    from transformers import initialization
    from transformers.modeling_utils import PreTrainedModel

    from peft.tuners.tuners_utils import BaseTunerLayer

    remote = model.is_remote_code()
    # transformers initialises a tied output head as its own tensor, then ties it to the input embedding: the head's
    # draws are taken and thrown away
    head, owners = model.get_output_embeddings(), {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            owners[id(param)] = owners.get(id(param), 0) + 1

    def tied_head(owner, param) -> bool:
        return owner is head and owners.get(id(param), 0) > 1

    def walk(module, fn):
        if isinstance(module, BaseTunerLayer):  # a LoRA wrapper: the plain model had its base layer here
            walk(module.get_base_layer(), fn)
            return
        for child in module.children():
            walk(child, child._initialize_weights if isinstance(child, PreTrainedModel) else fn)
        if not (only_with_buffers and not list(module.buffers(recurse=False))):
            params = _own_and_childrens(module)
            if before is not None:
                before(params)
            _with_whole(params, lambda: fn(module, remote), discard=tied_head)
        if after is not None:
            after(module)

    for module in model.modules():  # the meta build set no flags; a loaded model may carry them
        if hasattr(module, "_is_hf_initialized"):
            del module._is_hf_initialized
    with torch.no_grad(), initialization.guard_torch_init_functions():
        walk(model, model._initialize_weights)


def init_lora(peft_model) -> None:
    """peft's initialisation of every LoRA layer, in module order (what get_peft_model does on a built model)."""
    from peft.tuners.lora import LoraLayer

    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            params = [(owner, name) for path, owner in module.named_modules() if "lora_" in path
                      for name, _ in owner.named_parameters(recurse=False)]
            for adapter in [*module.lora_A.keys(), *module.lora_embedding_A.keys()]:
                init = peft_model.peft_config[adapter].init_lora_weights
                _with_whole(params, lambda m=module, a=adapter, i=init: m.reset_lora_parameters(a, i))


def weight_files(directory: str) -> Optional[Dict[str, str]]:
    """Tensor name -> safetensors file of a model directory; None where it has no safetensors."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return {name: os.path.join(directory, file) for name, file in json.load(f)["weight_map"].items()}
    single = os.path.join(directory, "model.safetensors")
    if os.path.exists(single):
        return {name: single for name in _header(single)[0] if name != "__metadata__"}
    return None


def file_key(param_name: str, files: Dict[str, str], prefix: str) -> Optional[str]:
    """The name a parameter has in the files: peft's wrapping removed, the base model's prefix as the files have it."""
    name = unwrapped_name(param_name)
    for candidate in (name, name.removeprefix(f"{prefix}."), f"{prefix}.{name}"):
        if candidate in files:
            return candidate
    return None


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def _header(path: str) -> Tuple[Dict[str, dict], int]:
    """A safetensors file's header (name -> dtype, shape, data_offsets) and where its data starts."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(size)), 8 + size


def _read_rows(f, entry: dict, data_start: int, start: int, stop: int, out: torch.Tensor) -> None:
    """Rows [start, stop) of a tensor in an open safetensors file, read straight into `out` (a plain read, not a
    memory map: the file's pages never count in this process's memory)."""
    dtype = _DTYPES[entry["dtype"]]
    row_bytes = dtype.itemsize
    for size in entry["shape"][1:]:
        row_bytes *= size
    direct = out.dtype == dtype and out.is_contiguous()
    target = out if direct else torch.empty(out.shape, dtype=dtype)
    f.seek(data_start + entry["data_offsets"][0] + start * row_bytes)
    view = memoryview(target.view(torch.uint8).reshape(-1).numpy())
    if f.readinto(view) != len(view):
        raise OSError(f"{f.name}: the file ends inside a tensor")
    if not direct:
        out.copy_(target)


def load_from_files(model, directory: str, files: Dict[str, str], skip: Iterable[str] = ()) -> None:
    """Each rank reads its rows of every parameter from the safetensors files (never a whole tensor or file)."""
    prefix = _hf(model).base_model_prefix
    by_file: Dict[str, List[Tuple[torch.nn.Parameter, str]]] = {}
    skip = set(skip)
    for name, param in model.named_parameters(remove_duplicate=True):
        if name in skip:
            continue
        key = file_key(name, files, prefix)
        if key is None:
            raise KeyError(name)
        by_file.setdefault(files[key], []).append((param, key))
    with torch.no_grad():
        for path, wanted in by_file.items():
            header, data_start = _header(path)
            with open(path, "rb", buffering=0) as f:
                for param, key in wanted:
                    entry = header[key]
                    rows = entry["shape"][0] if entry["shape"] else 1
                    sharded = hasattr(param, "to_local")
                    start, stop = _rows(param, rows) if sharded else (0, rows)
                    local = param.to_local() if sharded else param.data
                    if stop > start:
                        _read_rows(f, entry, data_start, start, stop, local)


def loadable_on_meta(skeleton, vocab_size: int) -> bool:
    """Whether a meta-device skeleton can get its weights slice by slice: no embedding rows to add (transformers
    initialises new rows from the old ones, whole), and every parameter in the weights' safetensors."""
    if skeleton.get_input_embeddings().num_embeddings < vocab_size:
        return False
    directory = skeleton.rtune_weights_dir
    if directory is None:
        return True
    files = weight_files(directory)
    if files is None:
        return False
    tied = set(getattr(skeleton, "all_tied_weights_keys", {}) or {})
    prefix = skeleton.base_model_prefix
    return all(file_key(name, files, prefix) is not None or name in tied
               for name, _ in skeleton.named_parameters(remove_duplicate=True))


def materialize(module, raw, device: torch.device, weights_dir: Optional[str], lora: bool, seed: int) -> None:
    """Give the sharded skeleton memory, each rank its slices (see the module docstring). `module` is what was
    sharded (the loss wrapper), `raw` the HF or peft model inside it; `seed` the one the model was built under (the
    plain path initialises right after seeding: so does this)."""
    torch.manual_seed(seed)
    module.to_empty(device=device)
    base = _hf(raw)
    if weights_dir is None:
        replay_init(base)
    else:
        replay_init(base, only_with_buffers=True)  # rotary frequencies; the weights come from the files next
        tied = set(getattr(base, "all_tied_weights_keys", {}) or {})
        lora_names = {n for n, _ in raw.named_parameters() if ".lora_" in n}
        load_from_files(raw, weights_dir, weight_files(weights_dir),
                        skip=lora_names | {n for n, _ in raw.named_parameters() if unwrapped_name(n) in tied})
    base.tie_weights()
    if lora:
        init_lora(raw)


def init_from_config(model_config, **kwargs):
    """A model built from config on this process: on the meta device, then transformers' initialisation module by
    module (torch's constructor initialisations, which transformers overwrites, are never run), exactly as the
    sharded path initialises it. Under ZeRO-3, transformers' own zero.Init path does the same."""
    from transformers import AutoModelForCausalLM
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        return AutoModelForCausalLM.from_config(model_config, **kwargs)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, **kwargs)
    model.to_empty(device="cpu")
    replay_init(model)
    model.tie_weights()
    return model


SAVE_SHARD_BYTES = 2 ** 30  # save_initialised's safetensors files (the last one smaller)


def save_initialised(model_config, out_dir: str, shard_bytes: int = SAVE_SHARD_BYTES, **kwargs) -> None:
    """A model built from config, saved as safetensors without ever being whole in memory: transformers'
    initialisation replayed module by module (the weights of `init_from_config`, bit for bit), each tensor written
    once final and its memory given back. The peak is about one block, plus a shard file's worth of tensors."""
    import ctypes

    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, **kwargs)
    if any(name not in dict(model.named_parameters(remove_duplicate=False)) for name in model.state_dict()):
        init_from_config(model_config, **kwargs).save_pretrained(out_dir, safe_serialization=True)
        return  # persistent buffers: not replayed here (none of the families rtune knows has one)
    model.to_empty(device="cpu")  # address space only: a page takes memory once written
    model.tie_weights()  # to_empty gave a tied head its own tensor: one again (its draws are then thrown away)
    shapes = {id(p): p.shape for p in model.parameters()}
    names = {id(p): name for name, p in model.named_parameters()}  # tied: the first name, as save_pretrained keeps
    written, pending, files, total = set(), {}, {}, 0
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc: give freed heap pages back

    def flush() -> None:
        if pending:
            name = f"model-{len(set(files.values())) + 1:05d}.safetensors"
            save_file(pending, os.path.join(out_dir, name), metadata={"format": "pt"})
            files.update(dict.fromkeys(pending, name))
            for key in pending:
                params[key].data = torch.empty(0, dtype=params[key].dtype)
            pending.clear()
            if trim is not None:
                trim(0)

    def before(owned):  # written and freed already (a tied head's throwaway draws): its shape back, values moot
        for owner, name in owned:
            param = owner._parameters[name]
            if param.shape != shapes[id(param)]:
                param.data = torch.empty(shapes[id(param)], dtype=param.dtype)

    def after(module):
        nonlocal total
        for child in module.children():
            for param in child.parameters(recurse=False):
                if id(param) not in written:
                    written.add(id(param))
                    pending[names[id(param)]], params[names[id(param)]] = param.data, param
                    total += param.numel() * param.element_size()
        if sum(t.numel() * t.element_size() for t in pending.values()) >= shard_bytes:
            flush()

    params: Dict[str, torch.nn.Parameter] = {}
    os.makedirs(out_dir, exist_ok=True)
    replay_init(model, before=before, after=after)
    for name, param in model.named_parameters():  # the root's own parameters, if any
        if id(param) not in written:
            written.add(id(param))
            pending[name], params[name] = param.data, param
            total += param.numel() * param.element_size()
    flush()
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": files}, f, indent=2)
    model.config.save_pretrained(out_dir)
    if model.can_generate():
        model.generation_config.save_pretrained(out_dir)


def _hf(model):
    """The transformers model under a peft wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def unwrapped_name(name: str) -> str:
    """A peft model's parameter name as the model alone names it."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def load_adapter(peft_model, ckpt_dir: str) -> None:
    """A resumed LoRA checkpoint's adapter into the sharded model (every rank reads the small file whole)."""
    from safetensors.torch import load_file

    saved = load_file(os.path.join(ckpt_dir, "adapter_model.safetensors"))
    params = dict(peft_model.named_parameters())
    for key, value in saved.items():
        name = key.replace(".weight", ".default.weight") if ".lora_" in key else key
        if name not in params:
            raise KeyError(f"{key} of the adapter has no parameter {name} in the model")
        assign(params[name], value)
