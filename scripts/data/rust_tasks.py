"""Hand-written Rust tasks: the material of the bundled chat and preference sets.

Each `Spec` is a small std-only Rust function with its signature, what it does in words, a body,
worked examples (which become unit tests), and an explanation of how it works. `struct_specs()` adds
record-type tasks over the domains of the bundled Rust corpus. `make_rust_chat.py` turns them into
conversations and preference pairs; `--check` there compiles every piece of code with rustc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple


@dataclass
class Spec:
    name: str
    params: str  # "values: &[i64]"
    ret: str  # "i64"
    does: str  # "returns the sum of the even numbers in a slice"
    body: str  # the function body, indented by four spaces per level, without the outer braces
    examples: List[Tuple[str, str]]  # (call arguments, expected value), e.g. ("&[1, 2, 3, 4]", "6")
    explain: str  # how it works, in two or three sentences
    uses: str = ""  # `use` lines the function needs
    preamble: str = ""  # items the function needs (a struct definition), placed before it
    tags: List[str] = field(default_factory=list)

    @property
    def signature(self) -> str:
        return f"pub fn {self.name}({self.params}) -> {self.ret}"

    def code(self, doc: bool = False, body: str | None = None, signature: str | None = None) -> str:
        lines = [f"/// {self.does[0].upper()}{self.does[1:]}."] if doc else []
        lines.append(f"{signature or self.signature} {{")
        lines += ["    " + line if line else "" for line in (body or self.body).splitlines()]
        lines.append("}")
        return "\n".join(lines)

    def tests(self) -> str:
        asserts = "\n".join(f"        assert_eq!({self.name}({args}), {expected});" for args, expected in self.examples)
        return ("#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n"
                f"    fn {self.name}_examples() {{\n{asserts}\n    }}\n}}")

    def unit(self, code: str) -> str:
        """A compilable unit: uses, preamble, then `code`."""
        parts = [p for p in (self.uses, self.preamble, code) if p]
        return "\n\n".join(parts)


SPECS: List[Spec] = [
    Spec("sum_even", "values: &[i64]", "i64", "returns the sum of the even numbers in a slice",
         "values.iter().copied().filter(|v| v % 2 == 0).sum()",
         [("&[1, 2, 3, 4]", "6"), ("&[]", "0"), ("&[-2, 5, 7]", "-2")],
         "It copies each value out of the slice, keeps the ones whose remainder modulo 2 is zero, and adds "
         "them up with `sum`. An empty slice sums to 0, so no special case is needed.", tags=["iter"]),
    Spec("count_vowels", "text: &str", "usize", "counts the vowels (a, e, i, o, u, either case) in a string",
         "text.chars().filter(|c| \"aeiouAEIOU\".contains(*c)).count()",
         [("\"hello\"", "2"), ("\"\"", "0"), ("\"RUST\"", "1")],
         "It walks the string one `char` at a time, keeps the characters that appear in the vowel list, and "
         "counts them. Working on `chars` rather than bytes keeps it correct for non-ASCII text.", tags=["str"]),
    Spec("reverse_words", "text: &str", "String", "reverses the order of the words in a sentence",
         "text.split_whitespace().rev().collect::<Vec<_>>().join(\" \")",
         [("\"one two three\"", "\"three two one\""), ("\"solo\"", "\"solo\""), ("\"\"", "\"\"")],
         "`split_whitespace` yields the words without the spaces, `rev` walks them back to front, and "
         "`join` glues them together with single spaces. Repeated spaces in the input collapse to one.",
         tags=["str"]),
    Spec("is_palindrome", "text: &str", "bool",
         "checks whether a string reads the same backwards, ignoring case and anything but letters and digits",
         "let cleaned: Vec<char> = text\n    .chars()\n    .filter(|c| c.is_alphanumeric())\n"
         "    .map(|c| c.to_ascii_lowercase())\n    .collect();\ncleaned.iter().eq(cleaned.iter().rev())",
         [("\"Racecar\"", "true"), ("\"rust\"", "false"), ("\"A man, a plan, a canal: Panama\"", "true")],
         "It first keeps only the alphanumeric characters, lower-cased, in a `Vec<char>`. Then it compares "
         "that vector with its own reverse iterator element by element; `eq` stops at the first mismatch.",
         tags=["str"]),
    Spec("factorial", "n: u64", "u64", "computes n factorial", "(1..=n).product()",
         [("0", "1"), ("5", "120"), ("10", "3628800")],
         "The inclusive range `1..=n` holds every factor, and `product` multiplies them. For `n = 0` the "
         "range is empty and the product of nothing is 1, which is exactly 0!.", tags=["math"]),
    Spec("fibonacci", "n: u32", "u64", "returns the n-th Fibonacci number, counting fibonacci(0) = 0",
         "let (mut a, mut b) = (0u64, 1u64);\nfor _ in 0..n {\n    let next = a + b;\n    a = b;\n    b = next;\n}\na",
         [("0", "0"), ("1", "1"), ("10", "55")],
         "It keeps the last two numbers in `a` and `b` and shifts them forward `n` times. This takes linear "
         "time and constant memory, unlike the naive recursive version.", tags=["math", "mut"]),
    Spec("gcd", "a: u64, b: u64", "u64", "computes the greatest common divisor of two numbers",
         "let (mut a, mut b) = (a, b);\nwhile b != 0 {\n    let r = a % b;\n    a = b;\n    b = r;\n}\na",
         [("12, 18", "6"), ("7, 0", "7"), ("17, 5", "1")],
         "This is Euclid's algorithm: replace the pair `(a, b)` by `(b, a % b)` until `b` is zero, and the "
         "remaining `a` is the divisor. It shadows the parameters with mutable copies.", tags=["math", "mut"]),
    Spec("max_value", "values: &[i32]", "Option<i32>", "returns the largest value in a slice, or None when it is empty",
         "values.iter().copied().max()",
         [("&[3, 9, 2]", "Some(9)"), ("&[]", "None"), ("&[-5, -1]", "Some(-1)")],
         "`max` on an iterator already returns an `Option`, `None` for an empty input, so the function is "
         "a one-liner. `copied` turns the `&i32` items into `i32`.", tags=["iter", "option"]),
    Spec("average", "values: &[f64]", "Option<f64>", "returns the mean of a slice of floats, or None when it is empty",
         "if values.is_empty() {\n    return None;\n}\nSome(values.iter().sum::<f64>() / values.len() as f64)",
         [("&[1.0, 2.0, 3.0]", "Some(2.0)"), ("&[]", "None"), ("&[0.5, 1.5]", "Some(1.0)")],
         "It returns `None` early for an empty slice, which avoids dividing by zero. Otherwise it sums the "
         "values and divides by the length converted to `f64`.", tags=["option", "float"]),
    Spec("count_words", "text: &str", "usize", "counts the words in a string, splitting on whitespace",
         "text.split_whitespace().count()",
         [("\"the quick brown fox\"", "4"), ("\"   \"", "0"), ("\"one\"", "1")],
         "`split_whitespace` skips any run of spaces, tabs or newlines, so leading, trailing and repeated "
         "whitespace does not create empty words. `count` consumes the iterator.", tags=["str"]),
    Spec("capitalize", "word: &str", "String", "returns the word with its first letter in upper case",
         "let mut chars = word.chars();\nmatch chars.next() {\n    Some(first) => first.to_uppercase().chain(chars).collect(),\n"
         "    None => String::new(),\n}",
         [("\"rust\"", "\"Rust\".to_string()"), ("\"\"", "String::new()"), ("\"éclair\"", "\"Éclair\".to_string()")],
         "It takes the first `char` off an iterator, upper-cases it (which can yield more than one char, so "
         "it is an iterator too), and chains the rest of the word behind it. An empty word stays empty.",
         tags=["str", "mut"]),
    Spec("clamp_percent", "value: i32", "i32", "limits a value to the range 0 to 100", "value.clamp(0, 100)",
         [("-5", "0"), ("42", "42"), ("250", "100")],
         "`clamp` returns the lower bound for values below it, the upper bound for values above it, and the "
         "value itself otherwise. It panics only if the bounds are reversed, which they are not here.",
         tags=["math"]),
    Spec("is_prime", "n: u32", "bool", "tells whether a number is prime",
         "if n < 2 {\n    return false;\n}\nlet mut d = 2;\nwhile d * d <= n {\n    if n % d == 0 {\n"
         "        return false;\n    }\n    d += 1;\n}\ntrue",
         [("1", "false"), ("2", "true"), ("91", "false"), ("97", "true")],
         "Numbers below 2 are not prime. Otherwise it tries every divisor up to the square root of `n`; if "
         "none divides evenly, `n` is prime. Checking only up to the square root keeps it fast.",
         tags=["math", "mut"]),
    Spec("digit_sum", "n: u64", "u64", "adds up the decimal digits of a number",
         "let mut n = n;\nlet mut total = 0;\nwhile n > 0 {\n    total += n % 10;\n    n /= 10;\n}\ntotal",
         [("0", "0"), ("1234", "10"), ("9009", "18")],
         "It peels off the last digit with `% 10`, adds it to the total, and drops it with `/= 10` until "
         "nothing is left.", tags=["math", "mut"]),
    Spec("binary_search", "values: &[i32], target: i32", "Option<usize>",
         "finds the index of a value in a sorted slice with binary search",
         "let (mut low, mut high) = (0, values.len());\nwhile low < high {\n    let mid = low + (high - low) / 2;\n"
         "    if values[mid] == target {\n        return Some(mid);\n    } else if values[mid] < target {\n"
         "        low = mid + 1;\n    } else {\n        high = mid;\n    }\n}\nNone",
         [("&[1, 3, 5, 7, 9], 7", "Some(3)"), ("&[1, 3, 5], 4", "None"), ("&[], 1", "None")],
         "It keeps a half-open window `[low, high)` that must contain the target if it is there at all, and "
         "halves it on every comparison. Computing `mid` as `low + (high - low) / 2` avoids overflow.",
         tags=["mut", "option"]),
    Spec("sorted_unique", "values: &[i32]", "Vec<i32>", "returns the distinct values of a slice in ascending order",
         "let mut out = values.to_vec();\nout.sort_unstable();\nout.dedup();\nout",
         [("&[3, 1, 3, 2, 1]", "vec![1, 2, 3]"), ("&[]", "Vec::<i32>::new()"), ("&[5, 5]", "vec![5]")],
         "It copies the slice into a new vector, sorts it so equal values sit next to each other, and lets "
         "`dedup` remove the consecutive repeats.", tags=["vec", "mut"]),
    Spec("celsius_to_fahrenheit", "celsius: f64", "f64", "converts a temperature from Celsius to Fahrenheit",
         "celsius * 9.0 / 5.0 + 32.0", [("0.0", "32.0"), ("100.0", "212.0"), ("-40.0", "-40.0")],
         "It applies the formula F = C x 9/5 + 32 with floating-point literals, so no integer division "
         "sneaks in.", tags=["float"]),
    Spec("parse_pair", "text: &str", "Option<(i32, i32)>", "parses a string like \"3,4\" into a pair of integers",
         "let (left, right) = text.split_once(',')?;\nSome((left.trim().parse().ok()?, right.trim().parse().ok()?))",
         [("\"3,4\"", "Some((3, 4))"), ("\" 10 , -2 \"", "Some((10, -2))"), ("\"3;4\"", "None"), ("\"a,1\"", "None")],
         "`split_once` cuts the string at the first comma and returns `None` if there is none; the `?` "
         "operator passes that `None` on. Each half is trimmed and parsed, and `ok()?` turns a parse error "
         "into `None` too.", tags=["option", "str"]),
    Spec("flatten", "nested: &[Vec<i32>]", "Vec<i32>", "flattens a slice of vectors into one vector",
         "nested.iter().flatten().copied().collect()",
         [("&[vec![1, 2], vec![], vec![3]]", "vec![1, 2, 3]"), ("&[]", "Vec::<i32>::new()")],
         "`flatten` walks each inner vector in turn, `copied` turns the borrowed items into values, and "
         "`collect` builds the result vector.", tags=["iter", "vec"]),
    Spec("running_sum", "values: &[i32]", "Vec<i32>", "returns the running totals of a slice",
         "values\n    .iter()\n    .scan(0, |total, v| {\n        *total += v;\n        Some(*total)\n    })\n    .collect()",
         [("&[1, 2, 3, 4]", "vec![1, 3, 6, 10]"), ("&[]", "Vec::<i32>::new()"), ("&[5, -5]", "vec![5, 0]")],
         "`scan` threads a piece of state, the running total, through the iterator: each step adds the next "
         "value to it and yields the new total.", tags=["iter"]),
    Spec("count_char", "text: &str, target: char", "usize", "counts how often a character occurs in a string",
         "text.chars().filter(|&c| c == target).count()",
         [("\"banana\", 'a'", "3"), ("\"\", 'x'", "0"), ("\"Mississippi\", 's'", "4")],
         "It compares each `char` of the string with the target and counts the matches. The `|&c|` pattern "
         "destructures the reference the filter closure receives.", tags=["str"]),
    Spec("longest_word", "text: &str", "Option<&str>", "returns the longest word of a string (the first one on a tie)",
         "let mut best: Option<&str> = None;\nfor word in text.split_whitespace() {\n"
         "    if best.map_or(true, |b| word.len() > b.len()) {\n        best = Some(word);\n    }\n}\nbest",
         [("\"a quick fox\"", "Some(\"quick\")"), ("\"\"", "None"), ("\"ab cd\"", "Some(\"ab\")")],
         "It remembers the best word so far and replaces it only when a strictly longer one comes along, "
         "which keeps the first of equally long words. The result borrows from the input, so no allocation "
         "happens.", tags=["str", "option", "mut"]),
    Spec("to_snake_case", "name: &str", "String", "converts a CamelCase name to snake_case",
         "let mut out = String::new();\nfor (i, c) in name.chars().enumerate() {\n    if c.is_uppercase() {\n"
         "        if i > 0 {\n            out.push('_');\n        }\n        out.extend(c.to_lowercase());\n"
         "    } else {\n        out.push(c);\n    }\n}\nout",
         [("\"HttpServer\"", "\"http_server\".to_string()"), ("\"id\"", "\"id\".to_string()"),
          ("\"ParseError\"", "\"parse_error\".to_string()")],
         "For every upper-case letter it emits an underscore (except at the very start) followed by the "
         "lower-case form; other characters are copied as they are.", tags=["str", "mut"]),
    Spec("rotate_left", "values: &[i32], k: usize", "Vec<i32>", "rotates a slice left by k positions",
         "if values.is_empty() {\n    return Vec::new();\n}\nlet k = k % values.len();\n"
         "let mut out = values[k..].to_vec();\nout.extend_from_slice(&values[..k]);\nout",
         [("&[1, 2, 3, 4, 5], 2", "vec![3, 4, 5, 1, 2]"), ("&[1, 2], 4", "vec![1, 2]"), ("&[], 3", "Vec::<i32>::new()")],
         "It reduces `k` modulo the length so large shifts wrap around, then builds the result from the tail "
         "`values[k..]` followed by the head `values[..k]`. The empty case returns early to avoid a "
         "division by zero.", tags=["vec", "mut"]),
    Spec("has_duplicates", "values: &[i32]", "bool", "tells whether any value occurs twice in a slice",
         "let mut seen = HashSet::new();\nvalues.iter().any(|v| !seen.insert(v))",
         [("&[1, 2, 3]", "false"), ("&[1, 2, 1]", "true"), ("&[]", "false")],
         "`HashSet::insert` returns false when the value was already present, so `any` stops at the first "
         "repeat. It runs in linear time.", uses="use std::collections::HashSet;", tags=["collections", "mut"]),
    Spec("is_power_of_two", "n: u64", "bool", "tells whether a number is a power of two",
         "n != 0 && n & (n - 1) == 0", [("1", "true"), ("64", "true"), ("0", "false"), ("96", "false")],
         "A power of two has exactly one bit set, and `n - 1` flips that bit and sets all lower ones, so "
         "`n & (n - 1)` is zero exactly for powers of two. Zero is excluded first, which also avoids an "
         "underflow.", tags=["math"]),
    Spec("merge_sorted", "a: &[i32], b: &[i32]", "Vec<i32>", "merges two sorted slices into one sorted vector",
         "let mut out = Vec::with_capacity(a.len() + b.len());\nlet (mut i, mut j) = (0, 0);\n"
         "while i < a.len() && j < b.len() {\n    if a[i] <= b[j] {\n        out.push(a[i]);\n        i += 1;\n"
         "    } else {\n        out.push(b[j]);\n        j += 1;\n    }\n}\nout.extend_from_slice(&a[i..]);\n"
         "out.extend_from_slice(&b[j..]);\nout",
         [("&[1, 4, 9], &[2, 3, 10]", "vec![1, 2, 3, 4, 9, 10]"), ("&[], &[1]", "vec![1]")],
         "Two cursors walk the inputs and always take the smaller head, which keeps the output sorted. When "
         "one side runs out, the rest of the other is appended in one go.", tags=["vec", "mut"]),
    Spec("lines_containing", "text: &str, needle: &str", "usize", "counts the lines of a text that contain a substring",
         "text.lines().filter(|line| line.contains(needle)).count()",
         [("\"ok\\nerror: x\\nerror: y\", \"error\"", "2"), ("\"\", \"a\"", "0")],
         "`lines` splits on `\\n` (and `\\r\\n`), and each line is kept if `contains` finds the needle in it.",
         tags=["str"]),
    Spec("safe_divide", "a: i32, b: i32", "Result<i32, String>", "divides two integers, returning an error for division by zero",
         "if b == 0 {\n    return Err(format!(\"cannot divide {} by zero\", a));\n}\nOk(a / b)",
         [("7, 2", "Ok(3)"), ("1, 0", "Err(\"cannot divide 1 by zero\".to_string())")],
         "It checks the divisor before dividing and returns an `Err` with a message instead of panicking. "
         "Integer division truncates toward zero.", tags=["result"]),
    Spec("hamming_distance", "a: &str, b: &str", "Option<usize>",
         "counts the positions where two equally long strings differ, or None if their lengths differ",
         "if a.chars().count() != b.chars().count() {\n    return None;\n}\n"
         "Some(a.chars().zip(b.chars()).filter(|(x, y)| x != y).count())",
         [("\"karolin\", \"kathrin\"", "Some(3)"), ("\"abc\", \"ab\"", "None"), ("\"\", \"\"", "Some(0)")],
         "Strings of different lengths have no Hamming distance, hence `None`. Otherwise `zip` pairs the "
         "characters position by position and the mismatches are counted.", tags=["str", "option"]),
    Spec("squares", "values: &[i32]", "Vec<i32>", "returns the square of every value in a slice",
         "values.iter().map(|v| v * v).collect()",
         [("&[1, -2, 3]", "vec![1, 4, 9]"), ("&[]", "Vec::<i32>::new()")],
         "`map` computes each square and `collect` gathers them into a new vector; the input is only "
         "borrowed.", tags=["iter", "vec"]),
    Spec("initials", "name: &str", "String", "returns the upper-case initials of a full name",
         "name.split_whitespace()\n    .filter_map(|part| part.chars().next())\n    .flat_map(|c| c.to_uppercase())\n"
         "    .collect()",
         [("\"ada lovelace\"", "\"AL\".to_string()"), ("\"Grace Brewster Hopper\"", "\"GBH\".to_string()"),
          ("\"\"", "String::new()")],
         "It takes the first character of each word (`filter_map` skips nothing here, but would skip an empty "
         "part), upper-cases it, and collects the characters into a `String`.", tags=["str", "iter"]),
    Spec("triangle_number", "n: u64", "u64", "returns the sum of the numbers from 1 to n",
         "n * (n + 1) / 2", [("0", "0"), ("4", "10"), ("100", "5050")],
         "Gauss's formula gives the sum directly in constant time; the product `n * (n + 1)` is always even, "
         "so the division is exact.", tags=["math"]),
    Spec("second_largest", "values: &[i32]", "Option<i32>", "returns the second-largest distinct value of a slice",
         "let mut distinct: Vec<i32> = values.to_vec();\ndistinct.sort_unstable();\ndistinct.dedup();\n"
         "distinct.iter().rev().nth(1).copied()",
         [("&[4, 1, 4, 3]", "Some(3)"), ("&[7, 7]", "None"), ("&[]", "None")],
         "It sorts a copy and removes repeats, so the largest distinct values sit at the end; `rev().nth(1)` "
         "picks the one before last, or `None` when there are fewer than two.", tags=["vec", "option", "mut"]),
    Spec("char_histogram", "text: &str", "BTreeMap<char, usize>", "counts each character of a string, in sorted order",
         "let mut counts = BTreeMap::new();\nfor c in text.chars().filter(|c| !c.is_whitespace()) {\n"
         "    *counts.entry(c).or_insert(0) += 1;\n}\ncounts",
         [("\"aba\"", "BTreeMap::from([('a', 2), ('b', 1)])"), ("\" \"", "BTreeMap::new()")],
         "The `entry` API inserts a zero count the first time a character is seen and increments it every "
         "time. A `BTreeMap` keeps the keys sorted, so iterating the result is deterministic.",
         uses="use std::collections::BTreeMap;", tags=["collections", "mut"]),
]

# Record-type tasks over the domains of the bundled Rust corpus (scripts/data/make_rust_sample.py).
DOMAINS = [
    ("Sensor", "sensors", "id", "u32", "label", "reading", "f64", "active"),
    ("Order", "orders", "id", "u64", "customer", "total_cents", "i64", "shipped"),
    ("Account", "accounts", "number", "u64", "owner", "balance_cents", "i64", "frozen"),
    ("Track", "tracks", "id", "u32", "title", "duration_ms", "u64", "explicit"),
    ("Task", "tasks", "id", "u32", "title", "priority", "u8", "done"),
    ("Book", "books", "id", "u32", "title", "pages", "u32", "available"),
    ("Vehicle", "vehicles", "id", "u32", "model", "mileage_km", "u32", "electric"),
    ("Employee", "employees", "id", "u32", "name", "salary", "u32", "remote"),
    ("Request", "requests", "id", "u64", "path", "latency_us", "u64", "ok"),
    ("Recipe", "recipes", "id", "u16", "name", "minutes", "u16", "vegan"),
    ("Shipment", "shipments", "id", "u64", "carrier", "weight_g", "u32", "insured"),
    ("Ticket", "tickets", "id", "u32", "subject", "severity", "u8", "open"),
]


def _literal(ty: str, i: int) -> str:
    return f"{1.5 * i:.1f}" if ty == "f64" else str(10 * i + 3)


def struct_specs() -> List[Spec]:
    """Three tasks per domain: filter by the flag, total of the number field, the names sorted by it."""
    out = []
    for entity, plural, key, kt, label, num, nt, flag in DOMAINS:
        preamble = (f"#[derive(Debug, Clone, PartialEq)]\npub struct {entity} {{\n    pub {key}: {kt},\n"
                    f"    pub {label}: String,\n    pub {num}: {nt},\n    pub {flag}: bool,\n}}")
        lower = entity.lower()
        items = [(i, f"{label.title()}{i}", _literal(nt, i), "true" if i % 2 else "false") for i in (1, 2, 3)]
        records = [f"{entity} {{ {key}: {i}, {label}: \"{name}\".to_string(), {num}: {n}, {flag}: {b} }}"
                   for i, name, n, b in items]
        sample = f"&[{', '.join(records)}]"
        flagged = [r for r, (_, _, _, b) in zip(records, items) if b == "true"]
        out.append(Spec(
            f"{flag}_{plural}", f"{plural}: &[{entity}]", f"Vec<{entity}>",
            f"returns the {plural} whose `{flag}` flag is set",
            f"{plural}.iter().filter(|{lower}| {lower}.{flag}).cloned().collect()",
            [(sample, f"vec![{', '.join(flagged)}]"), ("&[]", f"Vec::<{entity}>::new()")],
            f"It borrows the slice, keeps the {plural} whose `{flag}` field is true, and clones them into a "
            f"new vector (so it needs `{entity}: Clone`, which the derive provides). {len(flagged)} of the three "
            "sample records pass the filter.", preamble=preamble, tags=["struct", "iter"]))
        total_ty = "f64" if nt == "f64" else "u64" if nt.startswith("u") else "i64"
        conv = f"{lower}.{num}" if nt == total_ty else f"u64::from({lower}.{num})"
        expected_total = sum(float(n) if nt == "f64" else int(n) for _, _, n, _ in items)
        expected = f"{expected_total:.1f}" if nt == "f64" else str(expected_total)
        out.append(Spec(
            f"total_{num}", f"{plural}: &[{entity}]", total_ty, f"adds up the `{num}` of all {plural}",
            f"{plural}.iter().map(|{lower}| {conv}).sum()",
            [(sample, expected), ("&[]", "0.0" if total_ty == "f64" else "0")],
            f"It maps every {lower} to its `{num}`" + ("" if conv == f"{lower}.{num}" else f" widened to `{total_ty}`")
            + f" and sums the results. Widening first means a long list of {plural} cannot overflow the "
            f"field's own type.", preamble=preamble, tags=["struct", "iter"]))
        out.append(Spec(
            f"{label}s_by_{num}", f"{plural}: &[{entity}]", "Vec<String>",
            f"returns the `{label}` of every {lower}, ordered by `{num}` from largest to smallest",
            f"let mut sorted: Vec<&{entity}> = {plural}.iter().collect();\n"
            + (f"sorted.sort_by(|a, b| b.{num}.total_cmp(&a.{num}));\n" if nt == "f64"
               else f"sorted.sort_by(|a, b| b.{num}.cmp(&a.{num}));\n")
            + f"sorted.into_iter().map(|{lower}| {lower}.{label}.clone()).collect()",
            [(sample, "vec![" + ", ".join(f"\"{name}\".to_string()" for _, name, _, _ in reversed(items)) + "]"),
             ("&[]", "Vec::<String>::new()")],
            f"It sorts references to the {plural} rather than the records themselves, comparing `b` with `a` "
            "to get descending order" + (" (`total_cmp` gives floats a total order)" if nt == "f64" else "")
            + f", then clones out the `{label}` strings.", preamble=preamble, tags=["struct", "mut"]))
    return out


def all_specs() -> List[Spec]:
    return SPECS + struct_specs()
