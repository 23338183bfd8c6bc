"""Chat templates: the tokenizer's own, one of rtune's by name, or a Jinja file.

A tokenizer without a template (GPT-2, every model built from config) gets rtune's ChatML. A named
template brings its special tokens: they are added to the tokenizer (the model's embeddings are
resized to match when it is built), and the template is saved with the tokenizer in every checkpoint
and export, so `tokenizer.apply_chat_template` works on whatever rtune produces.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from rtune.errors import UserError

# ChatML (the layout Qwen and many others use), without a default system prompt.
CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Llama-3 layout: header tokens around the role, contents trimmed, <|eot_id|> ends a turn.
LLAMA3 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
TEMPLATES: Dict[str, Tuple[str, List[str]]] = {
    "chatml": (CHATML, ["<|im_start|>", "<|im_end|>"]),
    "llama3": (LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]),
}
DEFAULT_TEMPLATE = "chatml"


def apply_template(tokenizer, chat_template: Optional[str]) -> List[str]:
    """Give `tokenizer` the chat template the run asks for; returns the special tokens it added.

    chat_template: None keeps the tokenizer's own (rtune's ChatML if it has none), a name from
    TEMPLATES, or a path to a Jinja file.
    """
    if chat_template is None and getattr(tokenizer, "chat_template", None):
        return []
    name = chat_template or DEFAULT_TEMPLATE
    if name in TEMPLATES:
        template, special = TEMPLATES[name]
    elif os.path.isfile(os.path.expanduser(name)):
        with open(os.path.expanduser(name)) as f:
            template, special = f.read(), []
    else:
        raise UserError(f"data.chat_template={name!r} is neither a template name ({', '.join(TEMPLATES)}) nor a "
                        "Jinja file: give one of those names or a path to a .jinja file")
    missing = [t for t in special if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    tokenizer.chat_template = template
    return missing


def end_of_turn(tokenizer) -> Optional[str]:
    """The special token the template puts right after an assistant reply (None if it puts none).

    Found by rendering a probe conversation, so it works for any template: `<|im_end|>` for ChatML,
    `<|eot_id|>` for Llama 3, `</s>` for Mistral.
    """
    probe = "rtune-probe-reply"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": probe}], tokenize=False)
    after = text[text.rfind(probe) + len(probe):]
    specials = sorted(set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab()), key=len, reverse=True)
    return next((s for s in specials if s and after.startswith(s)), None)
