"""Prompt files: JSON lines, each a `prompt` (a string, or a list of chat messages) and any columns a verifier or a
reward reads (`test`, `answer`, ...); `rtune generate prompts=...` keeps the columns in its output. The benchmark
files of `benchmarks.py` are prompt files too (their `prompt` is a code prefix)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Tuple

from rtune.errors import UserError


def json_lines(path: str) -> Iterator[Tuple[int, Any]]:
    """(line number, record) for each non-empty line of a JSONL file; a line that is not JSON is one UserError."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path} line {number} is not valid JSON ({err.msg}): fix or drop that line") from None


def read_prompt_file(path: str) -> List[Dict[str, Any]]:
    """A prompt file's rows (UserError naming the line where one does not fit)."""
    if not os.path.isfile(path):
        raise UserError(f"prompts={path} is not a file: give a JSONL file with a `prompt` field per line")
    rows = []
    for number, row in json_lines(path):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), (str, list)) or not row["prompt"]:
            raise UserError(f"{path} line {number}: field 'prompt' must be a non-empty string or a list of "
                            "{role, content} messages")
        rows.append(row)
    if not rows:
        raise UserError(f"{path} holds no prompts")
    return rows
