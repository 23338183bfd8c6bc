"""Code benchmarks in the field names the code-eval world uses (HumanEval, MultiPL-E), and their prompts.

A benchmark is a JSONL file, one task per line:

    task_id             unique name of the task
    prompt              the code prefix a model completes: `use` lines and types it needs, a `///` doc comment,
                        the signature and its opening brace
    test                a `#[cfg(test)]` module; the task passes when every test in it passes
    entry_point         the function's name
    canonical_solution  (optional) a body that passes: `prompt + canonical_solution` is the whole function

`rust_eval` is bundled (155 tasks written for rtune, disjoint from rust_chat and rust_preference). A file that does
not fit is refused in one line naming the record and the field.

Prompt styles (`eval.prompt_style`): `completion` hands the model the prefix and takes its continuation up to the
function's closing brace; `chat` asks for the function as a user turn and takes the code from the reply (a fenced
block, or the text from the function's signature on).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from rtune.data.prompts import json_lines
from rtune.errors import UserError

BUNDLED = {"rust_eval": "rust_eval/rust_eval.jsonl"}
REQUIRED = ("task_id", "prompt", "test", "entry_point")
COMPLETION_STOP = "\n}"  # the function's closing brace, at column 0 (inner blocks are indented)
CHAT_ASK = ("Complete this Rust function. Reply with the whole function, its signature included, in one ```rust "
            "code block.\n\n```rust\n{code}```")


@dataclass
class Benchmark:
    name: str
    path: str
    tasks: List[Dict[str, Any]]
    sha256: str  # of the file's bytes: which version of the benchmark a score belongs to


def bundled_path(name: str) -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_data", BUNDLED[name])


def load_benchmark(name_or_path: str, max_tasks: Optional[int] = None, need_canonical: bool = False) -> Benchmark:
    """A bundled benchmark by name, or a JSONL file; every record checked (UserError naming record and field)."""
    path = bundled_path(name_or_path) if name_or_path in BUNDLED else os.path.abspath(os.path.expanduser(name_or_path))
    if not os.path.isfile(path):
        raise UserError(f"benchmark {name_or_path!r} is neither a bundled one ({', '.join(BUNDLED)}) nor a file: "
                        "give eval.benchmark=rust_eval or a JSONL path")
    with open(path, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    tasks, seen = [], set()
    for number, record in json_lines(path):
        where = f"{path} line {number}" + (f" (task {record.get('task_id')!r})" if isinstance(record, dict)
                                            and isinstance(record.get("task_id"), str) else "")
        _check_record(record, where, need_canonical)
        if record["task_id"] in seen:
            raise UserError(f"{where}: field 'task_id' repeats an earlier task's: give every task its own id")
        seen.add(record["task_id"])
        tasks.append(record)
    if not tasks:
        raise UserError(f"benchmark {path} holds no tasks")
    name = name_or_path if name_or_path in BUNDLED else os.path.splitext(os.path.basename(path))[0]
    return Benchmark(name, path, tasks[:max_tasks] if max_tasks else tasks, sha256)


def _check_record(record: Any, where: str, need_canonical: bool) -> None:
    if not isinstance(record, dict):
        raise UserError(f"{where}: a task must be a JSON object with fields {', '.join(REQUIRED)}")
    for field in REQUIRED + (("canonical_solution",) if need_canonical else ()):
        if field not in record:
            raise UserError(f"{where}: field {field!r} is missing" + (" (--canonical scores each task's canonical "
                                                                      "solution)" if field == "canonical_solution"
                                                                      else ""))
        if not isinstance(record[field], str) or not record[field].strip():
            raise UserError(f"{where}: field {field!r} must be a non-empty string, got {record[field]!r:.60}")
    if "canonical_solution" in record and not isinstance(record["canonical_solution"], str):
        raise UserError(f"{where}: field 'canonical_solution' must be a string")
    if not re.search(rf"\bfn\s+{re.escape(record['entry_point'])}\b", record["prompt"]):
        raise UserError(f"{where}: field 'prompt' does not declare `fn {record['entry_point']}` (its entry_point)")
    if "#[cfg(test)]" not in record["test"] and "#[test]" not in record["test"]:
        raise UserError(f"{where}: field 'test' holds no #[test] functions: give a #[cfg(test)] module")


def prompt_text(task: Dict[str, Any], style: str) -> str:
    """What the model is given: the code prefix, or (chat) the request a user turn carries."""
    if style == "completion":
        return task["prompt"]
    return CHAT_ASK.format(code=task["prompt"] + "    todo!()\n}\n")


def to_check(task: Dict[str, Any], text: str, style: str, stopped_at: Optional[str] = None
             ) -> Tuple[Dict[str, Any], str]:
    """(the task as its check reads it, the completion): `task["prompt"] + completion + task["test"]` is the program.

    completion: the continuation up to the function's closing brace (generation stops at it; put back here).
    chat: the reply's code is the function; the prefix keeps only what the reply does not restate (its `use`
    lines, and its types unless the reply defines them again)."""
    if style == "completion":
        return task, text + (COMPLETION_STOP + "\n" if stopped_at == COMPLETION_STOP else "")
    code = _reply_code(text, task["entry_point"])
    preamble = _preamble(task["prompt"]).splitlines()
    uses = [line for line in preamble if line.strip().startswith("use ") and line.strip() not in code]
    items = [line for line in preamble if not line.strip().startswith("use ")]
    names = re.findall(r"\b(?:struct|enum|type|trait|const)\s+([A-Za-z_]\w*)", "\n".join(items))
    if any(re.search(rf"\b(?:struct|enum|type|trait|const)\s+{name}\b", code) for name in names):
        items = []  # the reply brings its own definitions
    kept = "\n".join(uses + items).strip()
    return {**task, "prompt": kept + "\n\n" if kept else ""}, code


def _preamble(prefix: str) -> str:
    """The part of a task's prefix before the entry point's doc comment: `use` lines and types."""
    lines = prefix.splitlines()
    end = next((i for i, line in enumerate(lines) if re.match(r"\s*pub\s+fn\s|\s*fn\s", line)), len(lines))
    while end > 0 and lines[end - 1].lstrip().startswith("///"):
        end -= 1
    return "\n".join(lines[:end])


def _reply_code(text: str, entry_point: str) -> str:
    """The code in a chat reply: the fenced block that defines the entry point (else the first one; a block the
    reply never closed runs to its end), else the reply from the function's signature on."""
    blocks = re.findall(r"```[a-zA-Z0-9_+-]*\n(.*?)(?:```|\Z)", text, flags=re.S)
    for block in blocks:
        if re.search(rf"\bfn\s+{re.escape(entry_point)}\b", block):
            return block
    if blocks:
        return blocks[0]
    found = re.search(rf"(pub\s+)?fn\s+{re.escape(entry_point)}\b", text)
    return text[found.start():] if found else text
