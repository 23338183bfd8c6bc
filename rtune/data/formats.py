"""Record formats (`data.format`): what a record holds, and which of its tokens carry the loss.

    text               a document in `data.text_field`; every token trains (EOS appended)
    chat               `data.messages_field` (default `messages`): [{role, content}, ...], roles system,
                       user, assistant; ShareGPT records (`conversations`: [{from, value}], from human /
                       gpt / system) are mapped onto it
    instruction        Alpaca: `instruction`, optional `input`, `output` -> a user turn and an assistant turn
    prompt_completion  `prompt` + `completion` strings, concatenated; the completion (and EOS) trains
    preference         `prompt` + `chosen` + `rejected` (strings or message lists), for DPO/ORPO/SimPO

Chat-like records are rendered with the chat template, and the trained tokens are found from the
rendered text itself: the character span of each assistant message (plus the end-of-turn token right
after it), mapped onto tokens through the tokenizer's offsets. Any template works, with no
`{% generation %}` markers.

A record that does not fit its format raises `UserError` naming the record, the field and what was
expected. `encode_*` return `(input_ids, labels)` with `labels[t] = IGNORE` where no loss is taken, or
None for a record that has nothing to train on (no assistant turn): those are skipped and counted.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from rtune.errors import UserError
from rtune.tokens import IGNORE

ROLES = ("system", "user", "assistant")
# ShareGPT speaker names -> chat roles (the documented mapping).
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "model": "assistant", "system": "system"}
SHAREGPT_FIELD = "conversations"


Sample = Tuple[List[int], List[int]]


def required_fields(fmt: str, messages_field: str, columns: Sequence[str]) -> List[str]:
    """The fields a format needs that `columns` lacks ([] when the dataset fits the format)."""
    if fmt == "chat":
        return [] if messages_field in columns or SHAREGPT_FIELD in columns else [messages_field]
    needed = {"instruction": ["instruction", "output"], "prompt_completion": ["prompt", "completion"],
              "preference": ["prompt", "chosen", "rejected"], "prompt": ["prompt"]}.get(fmt, [])
    return [f for f in needed if f not in columns]


def _messages(value: Any, where: str, field: str) -> List[Dict[str, str]]:
    """A list of {role, content} (or ShareGPT {from, value}) messages, normalised; UserError otherwise."""
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: field {field!r} must be a non-empty list of {{role, content}} messages, "
                        f"got {type(value).__name__}")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise UserError(f"{where}: {field}[{i}] must be a {{role, content}} object, got {type(message).__name__}")
        if "from" in message and "role" not in message:
            speaker = message.get("from")
            role = SHAREGPT_ROLES.get(str(speaker).lower())
            if role is None:
                raise UserError(f"{where}: {field}[{i}] has speaker {speaker!r}; ShareGPT speakers are "
                                f"{', '.join(SHAREGPT_ROLES)}")
            content = message.get("value")
        else:
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                raise UserError(f"{where}: {field}[{i}] has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise UserError(f"{where}: {field}[{i}] ({role}) must have text content, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


def _text(value: Any, where: str, field: str, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise UserError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def record_messages(record: Dict[str, Any], fmt: str, messages_field: str, where: str) -> List[Dict[str, str]]:
    """The conversation of a chat or instruction record."""
    if fmt == "instruction":
        instruction = _text(record.get("instruction"), where, "instruction")
        extra = _text(record.get("input"), where, "input", optional=True)
        output = _text(record.get("output"), where, "output")
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    field = messages_field if messages_field in record else SHAREGPT_FIELD
    return _messages(record.get(field), where, field)


def record_texts(record: Dict[str, Any], fmt: str, text_field: str, messages_field: str) -> List[str]:
    """Every piece of text in a record (what a tokenizer built for the data is trained on)."""
    if fmt == "text":
        return [record.get(text_field) or ""]
    values = [record.get(k) for k in ("prompt", "completion", "chosen", "rejected", "instruction", "input",
                                      "output", messages_field, SHAREGPT_FIELD)]
    texts: List[str] = []
    for value in values:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts += [m.get("content") or m.get("value") or "" for m in value if isinstance(m, dict)]
    return texts


def _special_tokens(tokenizer) -> List[str]:
    return sorted(set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab()), key=len, reverse=True)


def assistant_spans(text: str, messages: List[Dict[str, str]], specials: Sequence[str], where: str
                    ) -> List[Tuple[int, int]]:
    """Character spans of each assistant reply in the rendered `text`, each with the special token after it.

    Messages are located in order, each searched from where the previous one ended; a template that
    trims contents is matched by the trimmed content.
    """
    spans, cursor = [], 0
    for i, message in enumerate(messages):
        content = message["content"]
        start = text.find(content, cursor)
        if start < 0 and content.strip():
            content = content.strip()
            start = text.find(content, cursor)
        if start < 0:
            if message["role"] == "assistant":
                raise UserError(f"{where}: the chat template does not render assistant message {i} verbatim, so "
                                "its tokens cannot be found: use data.chat_template=chatml or another template")
            continue  # a template may drop or rewrite system/user text; it carries no loss anyway
        end = start + len(content)
        if message["role"] == "assistant":
            tail = next((s for s in specials if s and text.startswith(s, end)), "")
            spans.append((start, end + len(tail)))
        cursor = end
    return spans


def encode_text(tokenizer, text: str) -> Sample:
    """A document: every token trains, EOS after it."""
    ids = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids + [tokenizer.eos_token_id]
    return ids, list(ids)


def encode_conversation(tokenizer, messages: List[Dict[str, str]], train_on: str, where: str) -> Optional[Sample]:
    """Render with the chat template; labels on assistant replies (or per `train_on`). None: nothing to train."""
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        return None
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    encoding = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    ids = encoding.ids
    if train_on == "all":
        return ids, list(ids)
    spans = assistant_spans(text, messages, _special_tokens(tokenizer), where)
    if train_on == "last_assistant":
        spans = spans[-1:]
    labels = [IGNORE] * len(ids)
    span_index = 0
    for t, (start, end) in enumerate(encoding.offsets):
        while span_index < len(spans) and spans[span_index][1] <= start:
            span_index += 1
        if span_index < len(spans) and start < spans[span_index][1] and end > spans[span_index][0]:
            labels[t] = ids[t]
    return ids, labels


def encode_prompt_completion(tokenizer, prompt: str, completion: str) -> Sample:
    """Prompt and completion tokenized apart and concatenated (no merge across the seam); EOS ends it."""
    backend = tokenizer.backend_tokenizer
    prompt_ids = backend.encode(prompt, add_special_tokens=False).ids
    completion_ids = backend.encode(completion, add_special_tokens=False).ids + [tokenizer.eos_token_id]
    return prompt_ids + completion_ids, [IGNORE] * len(prompt_ids) + completion_ids


def _prompt_messages(value: Any, where: str) -> List[Dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages = _messages(value, where, "prompt")
    if messages[-1]["role"] == "assistant":
        raise UserError(f"{where}: field 'prompt' must end with a user (or system) message; the replies belong "
                        "in 'chosen' and 'rejected'")
    return messages


def _reply_messages(value: Any, where: str, field: str) -> List[Dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    messages = _messages(value, where, field)
    if not any(m["role"] == "assistant" for m in messages):
        raise UserError(f"{where}: field {field!r} must hold an assistant reply (a string or assistant messages)")
    return messages


def _reply_tokens_only(tokenizer, conversation: List[Dict[str, str]], n_prompt: int, where: str) -> Sample:
    """Render prompt + reply; labels on the reply's assistant turns only (with their end-of-turn token)."""
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    encoding = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    spans = assistant_spans(text, conversation, _special_tokens(tokenizer), where)
    prompt_replies = sum(m["role"] == "assistant" for m in conversation[:n_prompt])
    spans = spans[prompt_replies:]  # assistant turns inside the prompt are context, not the reply
    labels = [IGNORE] * len(encoding.ids)
    for t, (start, end) in enumerate(encoding.offsets):
        if any(start < span_end and end > span_start for span_start, span_end in spans):
            labels[t] = encoding.ids[t]
    return encoding.ids, labels


def encode_preference(record: Dict[str, Any], tokenizer, where: str) -> Optional[Tuple[Sample, Sample]]:
    """(chosen, rejected) samples of a preference record, or None when both replies are the same.

    prompt, chosen and rejected are each a string or a list of chat messages; the replies become
    assistant turns after the prompt, rendered with the chat template, and only reply tokens carry
    log-probs."""
    prompt = _prompt_messages(record.get("prompt"), where)
    chosen = _reply_messages(record.get("chosen"), where, "chosen")
    rejected = _reply_messages(record.get("rejected"), where, "rejected")
    if chosen == rejected:
        return None
    return (_reply_tokens_only(tokenizer, prompt + chosen, len(prompt), where),
            _reply_tokens_only(tokenizer, prompt + rejected, len(prompt), where))


def encode_record(record: Dict[str, Any], fmt: str, tokenizer, text_field: str, messages_field: str,
                  train_on: str, where: str) -> Optional[Sample]:
    """One record of `fmt` -> (input_ids, labels), or None when it has nothing to train on."""
    if fmt == "text":
        return encode_text(tokenizer, _text(record.get(text_field), where, text_field))
    if fmt == "prompt_completion":
        return encode_prompt_completion(tokenizer, _text(record.get("prompt"), where, "prompt"),
                                        _text(record.get("completion"), where, "completion"))
    messages = record_messages(record, fmt, messages_field, where)
    return encode_conversation(tokenizer, messages, train_on, where)
