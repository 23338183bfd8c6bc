"""The tokenizer a run's data is encoded with: the model's own, with the chat template its format needs.

A model built from config has none: each engine trains a byte-level BPE on the training documents instead
(`datasets_engine.py` on the driver, `ray_engine.py` in a Ray task) and passes it through `with_template`.
"""

from __future__ import annotations

from rtune.config import DataConfig, RTuneConfig
from rtune.data.prepared import CHAT_FORMATS
from rtune.data.templates import apply_template
from rtune.model import load_tokenizer_from


def with_template(tokenizer, d: DataConfig):
    """The tokenizer with the chat template its format needs (chat formats only)."""
    if d.format in CHAT_FORMATS:
        apply_template(tokenizer, d.chat_template)
    return tokenizer


def model_tokenizer(cfg: RTuneConfig):
    """The tokenizer the model comes with (`model.tokenizer` or the model's own), with the format's template;
    None for a model built from config, whose engine trains a BPE on the data."""
    m = cfg.model
    if not (m.tokenizer or m.name_or_path):
        return None
    return with_template(load_tokenizer_from(m.tokenizer or m.name_or_path, m.trust_remote_code, m.revision), cfg.data)
