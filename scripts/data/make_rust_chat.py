"""Generate the bundled offline chat and preference sets (`data=rust_chat`, `data=rust_preference`).

Conversations about small std-only Rust functions (`rust_tasks.py`), in five kinds:

    write     "Write a Rust function that ..." -> the code (with a doc comment) and a note on how it works
    explain   a function, "what does this do?" -> what it does and how
    test      a function, "write unit tests" -> a #[cfg(test)] module built from worked examples
    fix       a function with one bug and the real rustc error (compiled here) -> the cause and the fix
    multi     two or three turns: write it, then tests / an explanation / a doc comment

About a fifth carry a system prompt. Preference pairs use the same prompts: the chosen reply is the
correct one; the rejected reply is code that does not compile (with the real bug), an answer to a
different question (an explanation where code was asked for, code where an explanation was), or the
explanation of a different function. Every code block is compiled with rustc when generating (`--check` also runs the
unit tests), so the sets teach code that builds.

    python scripts/data/make_rust_chat.py            # writes rtune/sample_data/rust_chat/ and rust_preference/
    python scripts/data/make_rust_chat.py --check    # also compiles and tests every function
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rust_tasks import Spec, all_specs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2] / "rtune/sample_data"
SEED = 20261122

SYSTEM_PROMPTS = [
    "You are a helpful Rust programming assistant. Answer with idiomatic, std-only Rust.",
    "You are a senior Rust engineer reviewing code. Be precise and brief.",
    "You help people learn Rust. Explain your reasoning in plain words.",
    "Answer in Rust. Prefer iterators and the standard library over hand-written loops where it reads better.",
]
WRITE_ASKS = [
    "Write a Rust function `{name}` that {does}.",
    "Can you implement `{sig}` in Rust? It {does}.",
    "I need a function that {does}. Please write it in Rust and call it `{name}`.",
    "Implement this in Rust:\n\n```rust\n/// {Does}.\n{sig} {{\n    todo!()\n}}\n```",
    "How would you write `{name}` in Rust? It should {does_bare}.",
]
EXPLAIN_ASKS = [
    "What does this Rust function do?\n\n```rust\n{code}\n```",
    "Can you explain how this works?\n\n```rust\n{code}\n```",
    "I found this in our codebase. Walk me through it:\n\n```rust\n{code}\n```",
]
TEST_ASKS = [
    "Write unit tests for this function:\n\n```rust\n{code}\n```",
    "Add a #[cfg(test)] module that checks this function on a few inputs, including edge cases:\n\n```rust\n{code}\n```",
]
FIX_ASKS = [
    "This does not compile. What is wrong?\n\n```rust\n{code}\n```\n\n```\n{error}\n```",
    "rustc rejects my function with this error:\n\n```\n{error}\n```\n\nHere is the code:\n\n```rust\n{code}\n```\n\nHow do I fix it?",
    "Why do I get this compile error?\n\n```rust\n{code}\n```\n\n```\n{error}\n```",
]
FOLLOW_UPS = {
    "tests": ["Now write unit tests for it.", "Great. Can you add tests?", "Add a test module covering the edge cases."],
    "explain": ["How does it work?", "Can you explain it step by step?", "Why is it written that way?"],
    "doc": ["Add a doc comment to it.", "Please document it with a `///` comment."],
}


# ---- bugs: each returns (buggy code, what the fix says) or None when it does not apply -----------------

def bug_drop_mut(spec: Spec) -> Optional[Tuple[str, str]]:
    match = re.search(r"let (\()?mut (\w+)", spec.body)
    if not match:
        return None
    body = spec.body.replace(match.group(0), f"let {match.group(1) or ''}{match.group(2)}", 1)
    var = match.group(2)
    return spec.code(body=body), (f"`{var}` is changed after it is bound, but it was declared without `mut`. "
                                  f"Rust variables are immutable by default: declare it with `let mut {var}`.")


INT_TYPES = ["i32", "i64", "u32", "u64", "usize", "u8", "u16"]


def bug_wrong_return(spec: Spec) -> Optional[Tuple[str, str]]:
    if spec.ret not in INT_TYPES:
        return None
    other = "i32" if spec.ret != "i32" else "u64"
    signature = spec.signature.replace(f"-> {spec.ret}", f"-> {other}")
    return spec.code(signature=signature), (
        f"The body produces a `{spec.ret}`, but the signature promises `{other}`, and Rust never converts "
        f"between integer types implicitly. Return `{spec.ret}` (or convert explicitly with `as` / `try_from` "
        "if you really need the other type).")


def bug_missing_import(spec: Spec) -> Optional[Tuple[str, str]]:
    if not spec.uses:
        return None
    return spec.code(), (f"The type is not in scope: the standard prelude does not include it. Add `{spec.uses}` "
                         "at the top of the module.")


METHOD_TYPOS = [(".len()", ".length()", "len"), (".is_empty()", ".empty()", "is_empty"),
                (".split_whitespace()", ".split_spaces()", "split_whitespace"), (".count()", ".size()", "count"),
                (".to_vec()", ".to_vector()", "to_vec"), (".chars()", ".characters()", "chars")]


def bug_method_typo(spec: Spec) -> Optional[Tuple[str, str]]:
    for right, wrong, name in METHOD_TYPOS:
        if right in spec.body:
            return spec.code(body=spec.body.replace(right, wrong, 1)), (
                f"There is no method `{wrong[1:-2]}`; the standard library calls it `{name}`. Replace "
                f"`{wrong}` with `{right}`.")
    return None


def bug_trailing_semicolon(spec: Spec) -> Optional[Tuple[str, str]]:
    lines = spec.body.splitlines()
    if lines[-1].endswith((";", "}")) or lines[-1].startswith(" "):
        return None
    body = "\n".join(lines[:-1] + [lines[-1] + ";"])
    return spec.code(body=body), (
        "The last line ends with a semicolon, which turns the value into a statement, so the function body "
        f"evaluates to `()` instead of `{spec.ret}`. Remove the semicolon so the expression is returned.")


BUGS: Dict[str, Callable[[Spec], Optional[Tuple[str, str]]]] = {
    "drop_mut": bug_drop_mut, "wrong_return": bug_wrong_return, "missing_import": bug_missing_import,
    "method_typo": bug_method_typo, "trailing_semicolon": bug_trailing_semicolon,
}


def rustc(source: str, test: bool = False) -> Tuple[bool, str]:
    """Compile `source` as a library (or a test binary); (ok, compiler output with stable paths)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lib.rs"
        path.write_text(source)
        cmd = ["rustc", "--edition", "2021", "--crate-type", "lib", "-A", "dead_code", "--color", "never",
               "-o", str(Path(tmp) / "out"), str(path)]
        if test:
            cmd = ["rustc", "--edition", "2021", "--test", "-A", "dead_code", "--color", "never",
                   "-o", str(Path(tmp) / "t"), str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if test and proc.returncode == 0:
            run = subprocess.run([str(Path(tmp) / "t")], capture_output=True, text=True)
            return run.returncode == 0, run.stdout + run.stderr
        return proc.returncode == 0, proc.stderr.replace(str(path), "src/lib.rs")


def first_error(output: str) -> str:
    """The first error block of rustc's output (up to its first blank line), without notes about flags."""
    blocks = output.split("\n\n")
    error = next(b for b in blocks if b.startswith("error"))
    return "\n".join(line.rstrip() for line in error.splitlines() if line.strip())


# ---- conversations ------------------------------------------------------------------------------------

def fields(spec: Spec) -> Dict[str, str]:
    does = spec.does
    bare = re.sub(r"^(returns|counts|computes|checks|tells|finds|reverses|converts|limits|adds up|parses|"
                  r"flattens|rotates|merges|divides)\b", lambda m: {"returns": "return", "counts": "count",
                  "computes": "compute", "checks": "check", "tells": "tell", "finds": "find", "reverses": "reverse",
                  "converts": "convert", "limits": "limit", "adds up": "add up", "parses": "parse",
                  "flattens": "flatten", "rotates": "rotate", "merges": "merge", "divides": "divide"}[m.group(1)],
                  does)
    return {"name": spec.name, "sig": spec.signature, "does": does, "Does": does[0].upper() + does[1:],
            "does_bare": bare}


def code_block(code: str) -> str:
    return f"```rust\n{code}\n```"


def write_reply(spec: Spec, rng: random.Random) -> str:
    intro = rng.choice(["Here is an implementation:", "Here's one way to write it:", "Sure:", "This does it:"])
    note = spec.explain.split(". ")[0].rstrip(".") + "."
    return f"{intro}\n\n{code_block(spec.unit(spec.code(doc=True)))}\n\n{note}"


def explain_reply(spec: Spec) -> str:
    return f"`{spec.name}` {spec.does}. {spec.explain}"


def tests_reply(spec: Spec, rng: random.Random) -> str:
    intro = rng.choice(["Here are tests built from a few worked examples:", "These tests cover the usual case and "
                        "the edge cases:", "A test module you can put below the function:"])
    return f"{intro}\n\n{code_block(spec.tests())}\n\nRun them with `cargo test`."


def doc_reply(spec: Spec) -> str:
    return f"With a doc comment:\n\n{code_block(spec.code(doc=True))}"


def chat(messages: List[Tuple[str, str]], rng: random.Random, system_share: float = 0.2) -> dict:
    out = []
    if rng.random() < system_share:
        out.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    out += [{"role": role, "content": content} for role, content in messages]
    return {"messages": out}


def conversations(spec: Spec, bugs: Dict[str, Tuple[str, str, str]], rng: random.Random) -> List[dict]:
    f = fields(spec)
    plain = spec.unit(spec.code())
    out = []
    for ask in rng.sample(WRITE_ASKS, 4):
        out.append(chat([("user", ask.format(**f)), ("assistant", write_reply(spec, rng))], rng))
    for ask in EXPLAIN_ASKS:
        out.append(chat([("user", ask.format(code=plain)), ("assistant", explain_reply(spec))], rng))
    for ask in TEST_ASKS:
        out.append(chat([("user", ask.format(code=plain)), ("assistant", tests_reply(spec, rng))], rng))
    for code, error, fix in bugs.values():
        ask = rng.choice(FIX_ASKS).format(code=code, error=error)
        reply = f"{fix}\n\nFixed:\n\n{code_block(spec.unit(spec.code()))}"
        out.append(chat([("user", ask), ("assistant", reply)], rng))
    first = [("user", rng.choice(WRITE_ASKS).format(**f)), ("assistant", write_reply(spec, rng))]
    out.append(chat(first + [("user", rng.choice(FOLLOW_UPS["tests"])), ("assistant", tests_reply(spec, rng))], rng))
    out.append(chat(first + [("user", rng.choice(FOLLOW_UPS["explain"])), ("assistant", spec.explain)], rng))
    out.append(chat([("user", rng.choice(EXPLAIN_ASKS).format(code=plain)), ("assistant", explain_reply(spec)),
                     ("user", rng.choice(FOLLOW_UPS["doc"])), ("assistant", doc_reply(spec))], rng))
    three = first + [("user", rng.choice(FOLLOW_UPS["explain"])), ("assistant", spec.explain),
                     ("user", rng.choice(FOLLOW_UPS["tests"])), ("assistant", tests_reply(spec, rng))]
    out.append(chat(three, rng, system_share=0.5))
    return out


def preference_pairs(spec: Spec, bugs: Dict[str, Tuple[str, str, str]], others: List[Spec],
                     rng: random.Random) -> List[dict]:
    """prompt / chosen / rejected: the right reply vs broken code, vs an answer to another question (prose
    where code was asked for, or code where an explanation was), or vs the explanation of another function."""
    f = fields(spec)
    pairs = []

    def pair(ask: str, chosen: str, rejected: str, kind: str) -> None:
        pairs.append({"prompt": [{"role": "user", "content": ask}],
                      "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}], "kind": kind})

    broken = list(bugs.values())
    for i, ask in enumerate(rng.sample(WRITE_ASKS, 4)):
        ask = ask.format(**f)
        chosen = write_reply(spec, rng)
        if broken:
            code, _, _ = broken[i % len(broken)]
            rejected = chosen.replace(code_block(spec.unit(spec.code(doc=True))), code_block(code))
            if rejected != chosen:
                pair(ask, chosen, rejected, "does_not_compile")
        pair(ask, chosen, explain_reply(rng.choice(others)), "answers_another_question")
    code = spec.unit(spec.code())
    for ask in rng.sample(EXPLAIN_ASKS, 2):
        pair(ask.format(code=code), explain_reply(spec), write_reply(rng.choice(others), rng),
             "answers_another_question")
    other = rng.choice(others)
    wrong = explain_reply(other).replace(f"`{other.name}`", f"`{spec.name}`", 1)
    pair(rng.choice(EXPLAIN_ASKS).format(code=code), explain_reply(spec), wrong, "wrong_explanation")
    return pairs


def build(check: bool) -> Tuple[List[dict], List[dict]]:
    rng = random.Random(SEED)
    specs = all_specs()
    chats, pairs = [], []
    for spec in specs:
        ok, out = rustc(spec.unit(spec.code(doc=True) + "\n\n" + spec.tests()), test=check)
        if not ok:
            raise SystemExit(f"{spec.name} does not {'pass its tests' if check else 'compile'}:\n{out}")
        bugs = {}
        for kind, make in BUGS.items():
            made = make(spec)
            if made is None:
                continue
            code, fix = made
            unit = code if kind == "missing_import" else spec.unit(code)
            broken, output = rustc(unit)
            if broken:  # the bug did not break the build: not a fix-it task
                continue
            bugs[kind] = (unit, first_error(output), fix)
        chats += conversations(spec, bugs, rng)
        pairs += preference_pairs(spec, bugs, [s for s in specs if s.name != spec.name], rng)
    rng.shuffle(chats)
    rng.shuffle(pairs)
    return chats, pairs


def write_jsonl(path: Path, rows: List[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="also build and run every function's unit tests")
    args = parser.parse_args()
    chats, pairs = build(args.check)
    write_jsonl(ROOT / "rust_chat" / "data.jsonl", chats)
    write_jsonl(ROOT / "rust_preference" / "data.jsonl", pairs)
    turns = [sum(m["role"] == "assistant" for m in c["messages"]) for c in chats]
    print(f"wrote {len(chats)} conversations ({sum(t > 1 for t in turns)} multi-turn, "
          f"{sum(c['messages'][0]['role'] == 'system' for c in chats)} with a system prompt) and "
          f"{len(pairs)} preference pairs under {ROOT}")


if __name__ == "__main__":
    main()
