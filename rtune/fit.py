"""Will it fit? Expected peak memory per worker, computed on the driver before Ray starts.

From the model's config (a weightless meta-device copy: no download of weights, no memory), the
strategy, precision, micro batch, `seq_len`, LoRA and worker count:

    weights       fp32 master weights (rtune trains fp32 weights, bf16 only in autocast): replicated
                  under DDP / ZeRO-1/2, sharded under FSDP2 / ZeRO-3 (plus the blocks gathered at a time);
                  a frozen LoRA base in bf16 under peft.base_dtype=bf16 (2 bytes a parameter); under
                  peft=qlora the linear weights in NF4 (~0.52 bytes) and the rest in the compute dtype
    loading       the peak while the model is built: FSDP2 (fsdp_load=sharded) gives each rank its slices
                  of a meta-device build, ZeRO-3 builds partitioned, QLoRA quantizes tensor by tensor as it
                  loads (a from-config base is first saved a file at a time); the others build the whole
                  model in fp32 on every rank (4 bytes a parameter, plus the runtime)
    gradients     fp32, trainable parameters only; sharded under ZeRO-2/3 and FSDP2; DDP adds its buckets
    optimizer     AdamW's two moments, 8 bytes per trainable parameter; sharded under ZeRO and FSDP2;
                  on the host with offload_optimizer=cpu (so not on the GPU)
    activations   what autograd keeps for backward, traced: a forward of the real architecture with one
                  and with two layers runs on the meta device under saved-tensor hooks, which gives the
                  bytes per token and layer (and outside the layers) for this model, its LoRA and its
                  attention; under gradient checkpointing each layer's input plus one layer recomputed
    logits        one chunk of fp32 logits and its gradient (rtune never holds a micro-batch's logits)
    runtime       the process itself: CUDA context and allocator slack on a GPU; Python, torch,
                  transformers and Ray on a CPU (measured on this project's CPU box)

The check compares the total with one GPU's memory (`gpu_memory_gb`, or the driver's own GPU), or on a
local CPU cluster with the RAM available to all workers together, and refuses a run that cannot fit
with one line: the estimate and the changes that would make it fit. `trainer.skip_fit_check=true`
overrides. `scripts/bench/fit.py` compares the estimate with measured peaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

from rtune.config import RTuneConfig, bf16_base, max_workers, worker_range
from rtune.errors import UserError
from rtune.model import adaptable_modules, apply_lora, lora_targets
from rtune.tokens import chunk_tokens_for

GB = 1024 ** 3
# Bytes per activation element kept for backward (fp32: 4; bf16 autocast keeps the matmul outputs in bf16
# and the norms in fp32: ~2.5 on average).
BYTES_PER_ELEMENT = {"fp32": 4.0, "bf16": 2.5}
RUNTIME_GB = {"cpu": 0.55, "cuda": 1.0}  # process baseline: CPU measured here (imports, Ray worker); GPU: context
LOGITS_CHUNK_COPIES = 3  # a chunk's logits, their log-softmax and their gradient exist at once
# NF4 with double quantization: 4 bits a weight, an 8-bit scale per 64-weight block, an fp32 scale per 256 blocks
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
MMAP_THRESHOLD_MAX = 32 * 2 ** 20  # glibc, 64-bit: allocations above it are always mmapped
TIGHT = 0.8  # above this share of the budget the run log warns: measured peaks ran up to ~25% above estimates


@dataclass(frozen=True)
class Shape:
    """What the memory model needs to know about an architecture."""

    params: int
    layers: int
    hidden: int
    vocab: int
    largest_block_params: int
    lora_params: int  # adapter parameters for the run's LoRA targets (0 without LoRA)
    linear_params: int  # weights of the linear layers but the output head: what QLoRA quantizes
    largest_linear_params: int  # the largest of those weights (dequantized whole for each 4-bit matmul)
    param_numels: Tuple[int, ...]  # every parameter's size (tied ones once): which of them glibc keeps
    linear_numels: Tuple[int, ...]  # each linear weight's size (what QLoRA dequantizes for every matmul)
    layer_bytes_per_token: float  # fp32 activations backward keeps per token and layer (traced, see below)
    square_bytes_per_layer: float  # attention-score-sized tensors per layer for TRACE_TOKENS (eager attention)
    other_bytes_per_token: float  # activations outside the layers (embeddings, final norm)


TRACE_TOKENS = 128


def _trace_saved_bytes(cfg: RTuneConfig, model_config, layers: int, gradient_checkpointing: bool):
    """(bytes per token, attention-score bytes) that autograd saves for backward in a forward pass of the
    real architecture with `layers` layers, on the meta device (no memory, no weights)."""
    import copy
    from unittest import mock

    import torch
    import transformers.masking_utils as masking
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model_config)
    for key in ("num_hidden_layers", "n_layer"):
        if hasattr(config, key):
            setattr(config, key, layers)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.model.trust_remote_code)
        if cfg.peft.adapters:
            model = apply_lora(model, cfg.peft).get_base_model()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    owned = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    linear: Dict[int, int] = {}
    square: Dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage._cdata not in owned:  # weights saved for backward are not activations
            is_square = tensor.dim() >= 2 and tensor.shape[-1] == tensor.shape[-2] == TRACE_TOKENS
            kept = square if is_square else linear
            kept[storage._cdata] = max(kept.get(storage._cdata, 0), storage.nbytes())
        return tensor

    ids = torch.zeros(1, TRACE_TOKENS, dtype=torch.long, device="meta")
    backbone = getattr(model, model.base_model_prefix)
    # Packed-sequence detection reads tensor values, which meta tensors do not have: one plain row here.
    with mock.patch.object(masking, "find_packed_sequence_indices", lambda positions: None), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        backbone(input_ids=ids, use_cache=False)
    return sum(linear.values()) / TRACE_TOKENS, sum(square.values())


@dataclass
class Estimate:
    """Expected peak bytes per worker, by part."""


    parts: Dict[str, float]
    device: str  # "cpu" or "cuda"
    loading: float = 0.0  # the peak while the model is built (before casting or sharding), runtime included
    notes: Dict[str, float] = field(default_factory=dict)  # the large costs behind the parts, by what causes them

    @property
    def total(self) -> float:
        return max(sum(self.parts.values()), self.loading)

    def describe(self) -> str:
        parts = ", ".join(f"{name} {value / GB:.2f}" for name, value in self.parts.items())
        if self.loading > sum(self.parts.values()):
            return (f"{self.total / GB:.2f} GB per worker while loading, {sum(self.parts.values()) / GB:.2f} GB "
                    f"training ({parts})")
        return f"{self.total / GB:.2f} GB per worker ({parts})"


def model_shape(cfg: RTuneConfig, model_config) -> Shape:
    """Parameter counts from a meta-device copy of the model (no weights are created or downloaded)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model_config, trust_remote_code=cfg.model.trust_remote_code)
    seen, numels = set(), []
    for p in skeleton.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            numels.append(p.numel())
    params = sum(numels)
    blocks = set(getattr(skeleton, "_no_split_modules", None) or [])
    largest = max((sum(p.numel() for p in m.parameters()) for m in skeleton.modules() if type(m).__name__ in blocks),
                  default=0)
    lora = 0
    head, kinds = skeleton.get_output_embeddings(), set(adaptable_modules(skeleton))
    linear = [m.weight.numel() for name, m in skeleton.named_modules()
              if name.split(".")[-1] in kinds and m is not head and hasattr(m, "weight")]
    if cfg.peft.adapters:
        targets = lora_targets(cfg.peft, skeleton)
        for name, module in skeleton.named_modules():
            last = name.split(".")[-1]
            if last not in kinds or module is head:
                continue
            if targets == "all-linear" or last in targets:
                weight = module.weight
                lora += cfg.peft.r * (weight.shape[0] + weight.shape[1])
    c = model_config
    layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", 0)
    hidden = getattr(c, "hidden_size", None) or getattr(c, "n_embd", 0)
    one, one_square = _trace_saved_bytes(cfg, model_config, 1, gradient_checkpointing=False)
    two, two_square = _trace_saved_bytes(cfg, model_config, 2, gradient_checkpointing=False)
    return Shape(params, layers, hidden, c.vocab_size, largest, lora, sum(linear), max(linear, default=0),
                 tuple(numels), tuple(linear), layer_bytes_per_token=two - one,
                 square_bytes_per_layer=two_square - one_square, other_bytes_per_token=max(2 * one - two, 0.0))


def heap_kept(numels: Tuple[int, ...], bytes_per_param: float) -> float:
    """What glibc keeps of tensors allocated whole and freed again, once per step: those up to its largest mmap
    threshold live on the heap, which it rarely gives back; larger ones are mapped and unmapped (returned)."""
    return bytes_per_param * sum(k for k in numels if k * bytes_per_param <= MMAP_THRESHOLD_MAX)


def estimate(cfg: RTuneConfig, shape: Shape, device: str) -> Estimate:
    """Peak bytes per worker for this config on `device` ("cpu" or "cuda")."""
    t, s, ws = cfg.trainer, cfg.strategy, worker_range(cfg)[0]  # an elastic group's smallest shards the least
    lora = cfg.peft.adapters
    trainable = shape.lora_params if lora else shape.params
    sharded_weights = s.name == "fsdp" or (s.name == "deepspeed" and s.zero_stage == 3)
    sharded_grads = sharded_weights or (s.name == "deepspeed" and s.zero_stage == 2)
    sharded_optimizer = s.name in ("fsdp", "deepspeed")
    zero3 = s.name == "deepspeed" and s.zero_stage == 3  # built inside deepspeed.zero.Init: partitioned already
    n = shape.params
    base = 2.0 if bf16_base(cfg) else 4.0  # bytes a base weight takes while training
    notes: Dict[str, float] = {}  # the large costs a refusal names
    weights = base * (n / ws + 2 * shape.largest_block_params if sharded_weights else n)
    if cfg.peft.quantized:  # NF4 linear weights (4 bits, double-quantized block scales), the rest in the compute
        # dtype, and one weight dequantized at a time for its matmul
        compute = 2.0 if t.precision == "bf16" else 4.0
        weights = quantized_base = notes.setdefault(
            "the 4-bit base, whole on every rank (DDP)", NF4_BYTES * shape.linear_params
            + compute * (n - shape.linear_params) + compute * shape.largest_linear_params)
        if device == "cpu":  # each matmul's dequantized weight is a new tensor: glibc keeps about half of them
            # (measured, 1B model, bf16 compute: 0.9 GB of the 1.9 GB they come to)
            weights += notes.setdefault("glibc keeps dequantized 4-bit weights (CPU)",
                                        0.5 * heap_kept(shape.linear_numels, compute))
    if s.name == "fsdp" and s.fsdp_load == "whole" and device == "cuda":  # the caching allocator keeps the whole
        weights += 4.0 * n  # build's blocks reserved (on a CPU they go back to glibc, which the term below counts)
    if s.name == "fsdp" and device == "cpu":  # each step gathers every tensor whole and frees it: glibc keeps the
        # small ones on its heap (measured: 1B model, the whole excess over the shards; 104M, all of it)
        weights += notes.setdefault("glibc keeps each step's gathered FSDP tensors (CPU)",
                                    heap_kept(shape.param_numels, base))
    if s.name == "deepspeed" and s.zero_stage < 3:  # initialize() flattens the weights into one new buffer
        weights += 4.0 * n
    if s.name == "deepspeed" and s.zero_stage == 3:  # a flat partition copy, and up to
        # stage3_max_live_parameters (DeepSpeed's default 1e9) gathered parameters kept between uses
        weights += 4.0 * n / ws + 4.0 * min(n, 1e9)
    if lora and device == "cpu" and t.precision == "bf16" and not bf16_base(cfg) and not cfg.peft.quantized \
            and s.name != "deepspeed":  # autocast casts each fp32 frozen weight to bf16 at every matmul, a new
        # tensor each time: glibc keeps those under its mmap threshold (measured: 1B model, 2.0 GB of 2.0 GB)
        weights += notes.setdefault("glibc keeps bf16 casts of the fp32 base (CPU)", heap_kept(shape.param_numels, 2.0))
    if lora:
        weights += 4.0 * shape.lora_params
        if cfg.model.name_or_path is None and device == "cpu" and not cfg.peft.quantized:
            # rank 0 keeps the base's pristine copy to save
            # with checkpoints, in host memory (so not on a GPU)
            key = "rank 0 keeps a copy of a from-config base to save beside each adapter"
            weights += notes.setdefault(key, (base if s.name == "fsdp" else 4.0) * n)
    # Loading: FSDP2 gives each rank its slices of a meta-device build (one module's tensors whole at a time);
    # ZeRO-3 builds partitioned; the others build the whole model in fp32 on every rank first.
    if cfg.peft.quantized:  # quantized tensor by tensor as it loads (transformers maps the files: their pages are
        # page cache the kernel takes back, not counted); a from-config base is first saved a file at a time
        # (model_init.save_initialised), its peak gone before the load
        loading = quantized_base + 4.0 * shape.largest_block_params
        if cfg.model.name_or_path is None:
            from rtune.model_init import SAVE_SHARD_BYTES  # what it holds at most besides one block

            loading = max(loading, 4.0 * shape.largest_block_params + SAVE_SHARD_BYTES)
    elif s.name == "fsdp" and s.fsdp_load == "sharded":
        loading = base * n / ws + 4.0 * shape.largest_block_params
    elif zero3:
        loading = 4.0 * (n / ws + shape.largest_block_params)
    else:
        loading = notes.setdefault("every rank builds the whole model in fp32 first", 4.0 * n)
    gradients = 4.0 * trainable / (ws if sharded_grads else 1)
    if s.name == "ddp" and ws > 1:  # DDP's reducer keeps its own flat buckets of every gradient
        gradients += 4.0 * trainable
    optimizer = 8.0 * trainable / (ws if sharded_optimizer else 1)
    if s.name == "deepspeed":  # ZeRO keeps its own flat fp32 partition of the trainable weights
        optimizer += 4.0 * trainable / ws
    if s.offload_optimizer == "cpu" and device == "cuda":
        optimizer = 0.0
    tokens = t.micro_batch_size * cfg.data.seq_len
    scale = BYTES_PER_ELEMENT[t.precision] / 4.0  # traced in fp32
    per_layer = tokens * shape.layer_bytes_per_token * scale
    if cfg.model.attn_implementation == "eager":  # keeps the attention scores: quadratic in the row length
        per_layer += shape.square_bytes_per_layer * t.micro_batch_size * (cfg.data.seq_len / TRACE_TOKENS) ** 2
    if t.gradient_checkpointing:  # every layer's input, plus one layer recomputed at a time
        activations = tokens * 4.0 * scale * shape.layers * shape.hidden + per_layer
    else:
        activations = shape.layers * per_layer
    activations += tokens * shape.other_bytes_per_token * scale
    chunk = min(tokens, chunk_tokens_for(shape.vocab, t.logits_chunk_tokens))
    logits = LOGITS_CHUNK_COPIES * 4.0 * chunk * shape.vocab
    return Estimate({"weights": weights, "gradients": gradients, "optimizer": optimizer, "activations": activations,
                     "logits": logits, "runtime": RUNTIME_GB[device] * GB}, device,
                    loading=loading + RUNTIME_GB[device] * GB, notes=notes)


def _available_ram_bytes() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return None


def _driver_gpu_bytes() -> Optional[float]:
    try:
        import torch

        if torch.cuda.is_available():
            return float(torch.cuda.get_device_properties(0).total_memory)
    except Exception:  # a broken driver install is not this check's business
        pass
    return None


def capacity(cfg: RTuneConfig, local_cluster: bool) -> Tuple[Optional[float], str]:
    """(bytes one worker may use, what that is), or (None, why the check cannot know)."""
    if cfg.use_gpu:
        if cfg.gpu_memory_gb:
            return cfg.gpu_memory_gb * GB, f"{cfg.gpu_memory_gb:g} GB per GPU (gpu_memory_gb)"
        found = _driver_gpu_bytes()
        if found:
            return found, f"{found / GB:.0f} GB per GPU (the driver's GPU)"
        return None, "GPU memory unknown on the driver: set gpu_memory_gb=<GB per GPU> to check"
    if not local_cluster:
        return None, "a remote cluster's node memory is not known before it runs"
    ram = _available_ram_bytes()
    if ram is None:
        return None, "available RAM unknown"
    workers = max_workers(cfg)
    per_worker = ram / workers
    return per_worker, f"{per_worker / GB:.1f} GB per worker ({ram / GB:.1f} GB RAM available / {workers})"


def _variants(cfg: RTuneConfig, device: str):
    """(override, config) for each single change that lowers memory, cheapest to adopt first."""
    t, p, s = cfg.trainer, cfg.peft, cfg.strategy
    if not t.gradient_checkpointing:
        yield "trainer.gradient_checkpointing=true", replace(cfg, trainer=replace(t, gradient_checkpointing=True))
    if t.micro_batch_size > 1:
        yield "trainer.micro_batch_size=1", replace(cfg, trainer=replace(t, micro_batch_size=1))
    if p.method == "none":
        yield "peft=lora", replace(cfg, peft=replace(p, method="lora"))
    elif p.method == "lora" and not bf16_base(cfg):
        yield "trainer.precision=bf16 peft.base_dtype=bf16", replace(
            cfg, trainer=replace(t, precision="bf16"), peft=replace(p, base_dtype="bf16"))
    if not p.quantized:  # the preset: all linear layers adapted; DDP, the strategy it runs under
        yield f"peft=qlora{'' if s.name == 'ddp' else ' strategy=ddp'}", replace(
            cfg, peft=replace(p, method="qlora", target_modules="all-linear", base_dtype="auto"),
            strategy=replace(s, name="ddp", offload_optimizer="none"))
    if not (s.name == "deepspeed" and s.zero_stage == 3):
        yield "strategy=deepspeed strategy.zero_stage=3", replace(cfg, strategy=replace(s, name="deepspeed",
                                                                                          zero_stage=3))
    if s.name != "fsdp":
        yield "strategy=fsdp", replace(cfg, strategy=replace(s, name="fsdp", offload_optimizer="none"))
    if device == "cuda" and s.offload_optimizer == "none":
        yield "strategy=deepspeed strategy.offload_optimizer=cpu", replace(cfg, strategy=replace(
            s, name="deepspeed", offload_optimizer="cpu"))


def _what_would_fit(cfg: RTuneConfig, model_config, device: str, budget: float) -> List[str]:
    """The single changes under which the estimate fits the budget."""
    return [label for label, trial in _variants(cfg, device)
            if estimate(trial, model_shape(trial, model_config), device).total <= budget]


_PEFT_WORDS = {"lora": " LoRA", "qlora": " QLoRA"}


@dataclass
class Assessment:
    """The estimate against the budget: what the fit check prints, and the refusal when it cannot fit."""

    estimate: Estimate
    shape: Shape
    budget: Optional[float]  # bytes one worker may use; None when the check cannot know
    what: str  # what the budget is (or why it is unknown)

    @property
    def fits(self) -> Optional[bool]:
        return None if self.budget is None else self.estimate.total <= self.budget

    def line(self) -> str:
        if self.budget is None:
            verdict = f"not checked: {self.what}"
        elif not self.fits:
            verdict = f"does NOT fit {self.what}"
        elif self.estimate.total > TIGHT * self.budget:  # the estimate runs up to ~25% under measured peaks
            verdict = f"fits {self.what}, but tightly: the estimate can be ~25% low, so it may run out of memory"
        else:
            verdict = f"fits {self.what}"
        return f"[rtune] expected peak memory: {self.estimate.describe()}; {verdict}"

    def refusal(self, cfg: RTuneConfig, model_config) -> str:
        fixes = _what_would_fit(cfg, model_config, self.estimate.device, self.budget)
        if fixes:
            hint = f"try {' or '.join(fixes)}"
        else:
            largest = sorted(self.estimate.notes.items(), key=lambda kv: -kv[1])[:2]
            why = "; ".join(f"{what}: {size / GB:.1f} GB" for what, size in largest)
            hint = (f"no single change fits{f' (the largest costs: {why})' if why else ''}: use a smaller model, "
                    "or more or bigger machines")
        return (f"this run needs ~{self.estimate.total / GB:.1f} GB per worker ({self.shape.params / 1e9:.2f}B "
                f"parameters, {cfg.strategy.name}{_PEFT_WORDS.get(cfg.peft.method, '')}"
                f"{' (bf16 base)' if bf16_base(cfg) else ''}, {cfg.trainer.precision}, "
                f"micro batch {cfg.trainer.micro_batch_size} x {cfg.data.seq_len}) and has {self.what}: {hint}")


def assess(cfg: RTuneConfig, model_config, local_cluster: bool) -> Assessment:
    device = "cuda" if cfg.use_gpu else "cpu"
    shape = model_shape(cfg, model_config)
    budget, what = capacity(cfg, local_cluster)
    return Assessment(estimate(cfg, shape, device), shape, budget, what)


def check_fit(cfg: RTuneConfig, model_config, local_cluster: bool) -> Optional[Estimate]:
    """Print the expected peak memory per worker; raise UserError naming the fixes if it cannot fit."""
    result = assess(cfg, model_config, local_cluster)
    print(result.line(), flush=True)
    if result.fits is False and not cfg.trainer.skip_fit_check:
        raise UserError(result.refusal(cfg, model_config) + "; trainer.skip_fit_check=true runs it anyway")
    return result.estimate
