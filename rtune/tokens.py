"""Token-level conventions that data preparation, the loss and the memory estimate share.

`IGNORE` marks a label that carries no loss; `chunk_tokens_for` says how many tokens' logits the loss
computes at once (the loss in `worker/lm.py` and the fit check in `fit.py` must agree on it).
"""

from __future__ import annotations

from typing import Optional

IGNORE = -100  # label of a token that carries no loss (prompt, padding, a sample's first token)
LOGITS_CHUNK_BYTES = 256 * 2 ** 20  # fp32 logits of one chunk; the loss's peak memory scales with it


def chunk_tokens_for(vocab_size: int, chunk_tokens: Optional[int] = None) -> int:
    """Tokens per logits chunk: as many as keep one chunk's fp32 logits under LOGITS_CHUNK_BYTES."""
    if chunk_tokens:
        return chunk_tokens
    return max(64, LOGITS_CHUNK_BYTES // (4 * vocab_size))
