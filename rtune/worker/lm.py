"""A causal LM seen as what every objective needs: the log-probability of each label token.

`TokenLogprobs(model)` wraps any Hugging Face causal LM (or its peft LoRA model). Its forward runs the
model's backbone for hidden states and computes log p(label) chunk by chunk over the tokens, so a
micro-batch's full `[tokens, vocab]` fp32 logits never exist at once: with Qwen's 151,646-token
vocabulary, 4 x 1024 tokens would otherwise hold 2.5 GB of logits, and as much again for their
log-softmax and its gradient. Each chunk runs under activation checkpointing, so the backward pass
recomputes that chunk's logits instead of keeping them.

Strategies wrap *this* module (DDP, FSDP2, DeepSpeed), so the head's weight is used inside the
wrapped forward, where sharded strategies have it gathered.

Packed rows: `position_ids` that restart at 0 inside a row mark where one sample ends and the next
begins. transformers builds a block-diagonal causal mask from them for eager/SDPA attention when no
attention mask is given and no KV cache exists (hence `use_cache=False`). Flash-attention's
variable-length kernels read them only from a single flattened row, so for those implementations the
batch is flattened to `[1, B*T]` first.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from rtune.tokens import IGNORE, chunk_tokens_for


def hf_model(model):
    """The transformers model under a peft wrapper (LoRA layers live inside it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class TokenLogprobs(torch.nn.Module):
    """forward(input_ids, labels, position_ids) -> log p(labels[t] | tokens < t), 0 where labels are IGNORE.

    Shapes: inputs `[B, T]`; the result is `[B, T]` aligned with `labels` (position 0 is always 0:
    nothing predicts the first token).

    Args:
        model: A transformers causal LM or a peft model around one.
        chunk_tokens: Tokens per logits chunk (None: from the vocabulary size, see LOGITS_CHUNK_BYTES).
        flatten_rows: Run the batch as one `[1, B*T]` row (flash-attention varlen needs it; None picks it
            from the model's attention implementation).
    """

    def __init__(self, model, chunk_tokens: Optional[int] = None, flatten_rows: Optional[bool] = None):
        super().__init__()
        self.lm = model
        config = hf_model(model).config
        self.chunk_tokens = chunk_tokens_for(config.vocab_size, chunk_tokens)
        attn = getattr(config, "_attn_implementation", None) or ""
        self.flatten_rows = ("flash" in attn) if flatten_rows is None else flatten_rows
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.train(model.training)  # a view of the model: same mode (eval stays eval)

    def hidden_states(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        inner = hf_model(self.lm)
        backbone = getattr(inner, inner.base_model_prefix)
        shape = input_ids.shape
        if self.flatten_rows:
            input_ids, position_ids = input_ids.reshape(1, -1), position_ids.reshape(1, -1)
        out = backbone(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        return out.last_hidden_state.reshape(*shape, -1)

    def _chunk_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = hf_model(self.lm).get_output_embeddings()(hidden).float()
        if self.softcap:  # Gemma-2 style final logit soft-capping, as the model's own forward applies it
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return -F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none")

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden_states(input_ids, position_ids)
        # Position t predicts token t + 1: shift, flatten, and skip tokens that carry no loss entirely.
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        targets = labels[:, 1:].reshape(-1)
        keep = (targets != IGNORE).nonzero().squeeze(1)
        h, kept_targets = h.index_select(0, keep), targets.index_select(0, keep)
        pieces = []
        for start in range(0, max(len(keep), 1), self.chunk_tokens):
            h_chunk, t_chunk = h[start:start + self.chunk_tokens], kept_targets[start:start + self.chunk_tokens]
            if torch.is_grad_enabled() and len(keep) > self.chunk_tokens:
                pieces.append(checkpoint(self._chunk_logprobs, h_chunk, t_chunk, use_reentrant=False))
            else:
                pieces.append(self._chunk_logprobs(h_chunk, t_chunk))
        logprobs = torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device)
        logprobs = logprobs.index_copy(0, keep, torch.cat(pieces)[:len(keep)])
        return F.pad(logprobs.view(labels.shape[0], -1), (1, 0))


def default_position_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """0..T-1 in every row: one causal sequence per row (no packing boundaries)."""
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
