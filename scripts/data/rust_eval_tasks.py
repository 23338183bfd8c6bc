"""The tasks of `rust_eval`, a held-out Rust code-generation benchmark in the HumanEval / MultiPL-E format.

Each `Task` is one std-only Rust function written for this project: a doc comment that specifies it
(behaviour, edge cases, one or two `assert_eq!` examples), its signature, a reference body, and unit
tests. `Task.record()` turns it into a benchmark row:

    prompt               helper items (`use` lines, a struct or enum), the `///` doc, `pub fn name(...) -> T {\\n`
    canonical_solution   the body indented by four spaces, then `}\\n`
    test                 a `#[cfg(test)] mod tests` with at least four assertions
    entry_point          the function name

A checker compiles `prompt + completion + "\\n\\n" + test` with `rustc --edition 2021 --test` and runs it; exit
status 0 is a pass. `make_rust_eval.py` writes `rtune/sample_data/rust_eval/rust_eval.jsonl` from `TASKS` and,
with `--check`, verifies every reference solution passes, every `todo!()` stub fails, and that no task shares
a function name with the chat and preference sets built from `scripts/data/rust_tasks.py`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Dict, List, Tuple, Union

Test = Union[Tuple[str, str], str]  # (call arguments, expected value) for `assert_eq!`, or a raw statement
EASY, MEDIUM, HARD = "easy", "medium", "hard"
DOC_WIDTH = 96


@dataclass(frozen=True)
class Task:
    name: str
    params: str  # "values: &[i64], k: usize"
    ret: str  # "Option<i64>"
    difficulty: str
    tags: Tuple[str, ...]
    doc: str  # paragraphs of plain text, wrapped into `///` lines
    body: str  # the function body, unindented
    tests: Tuple[Test, ...]
    preamble: str = ""  # `use` lines and item definitions placed before the doc comment
    approx: bool = False  # compare `(args, expected)` tests as f64 with a tolerance
    examples: Tuple[str, ...] = ()  # doc examples; by default the first two `(args, expected)` tests

    def assertion(self, args: str, expected: str, approx: bool) -> str:
        call = f"{self.name}({args})"
        return f"assert!(({call} - ({expected})).abs() < 1e-9);" if approx else f"assert_eq!({call}, {expected});"

    def doc_lines(self) -> List[str]:
        paragraphs = [" ".join(p.split()) for p in textwrap.dedent(self.doc).strip().split("\n\n")]
        lines: List[str] = []
        for paragraph in paragraphs:
            lines += [*([""] if lines else []), *textwrap.wrap(paragraph, DOC_WIDTH, break_long_words=False,
                                                                break_on_hyphens=False)]
        examples = self.examples or [self.assertion(a, e, False) for a, e in
                                     [t for t in self.tests if isinstance(t, tuple)][:2]]
        return [f"/// {line}".rstrip() for line in [*lines, "", *examples]]

    def prompt(self) -> str:
        head = f"{textwrap.dedent(self.preamble).strip()}\n\n" if self.preamble.strip() else ""
        return head + "\n".join(self.doc_lines()) + f"\npub fn {self.name}({self.params}) -> {self.ret} {{\n"

    def solution(self) -> str:
        body = textwrap.dedent(self.body).strip("\n")
        return "".join(f"    {line}\n" if line.strip() else "\n" for line in body.splitlines()) + "}\n"

    def test(self) -> str:
        lines = []
        for t in self.tests:
            stmt = self.assertion(*t, self.approx) if isinstance(t, tuple) else textwrap.dedent(t).strip()
            lines += [f"        {line}" for line in stmt.splitlines()]
        body = "\n".join(lines)
        return ("#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n"
                f"    fn {self.name}_works() {{\n{body}\n    }}\n}}\n")

    def assertions(self) -> int:
        return sum(1 if isinstance(t, tuple) else t.count("assert") for t in self.tests)

    def record(self, index: int) -> Dict[str, object]:
        return {"task_id": f"rust_eval/{index}", "prompt": self.prompt(), "canonical_solution": self.solution(),
                "test": self.test(), "entry_point": self.name, "difficulty": self.difficulty,
                "tags": list(self.tags)}


def T(name: str, params: str, ret: str, difficulty: str, tags: str, doc: str, body: str, *tests: Test,
      preamble: str = "", approx: bool = False, examples: Tuple[str, ...] = ()) -> Task:
    return Task(name, params, ret, difficulty, tuple(tags.split()), doc, body, tests, preamble, approx, examples)


def records() -> List[Dict[str, object]]:
    return [task.record(i) for i, task in enumerate(TASKS)]


TASKS: List[Task] = [
    # ---------------------------------------------------------------- integers and arithmetic
    T("digital_root", "n: u64", "u64", EASY, "math loop",
      r"""
      Returns the digital root of `n`: add up its decimal digits, then add up the digits of that sum, and so on
      until a single digit remains. The digital root of 0 is 0.
      """,
      r"""
      let mut n = n;
      while n >= 10 {
          let mut sum = 0;
          while n > 0 {
              sum += n % 10;
              n /= 10;
          }
          n = sum;
      }
      n
      """,
      ("9875", "2"), ("0", "0"), ("7", "7"), ("10", "1"), ("999999999999", "9"), ("u64::MAX", "6")),
    T("checked_total", "values: &[i64]", "Option<i64>", EASY, "math overflow option",
      r"""
      Adds up the values from left to right and returns the total, or `None` as soon as a partial sum overflows
      `i64` (even if later values would bring it back into range). The total of an empty slice is `Some(0)`.
      """,
      r"""
      values.iter().try_fold(0i64, |acc, &v| acc.checked_add(v))
      """,
      ("&[1, 2, 3]", "Some(6)"), ("&[i64::MAX, 1]", "None"), ("&[]", "Some(0)"),
      ("&[i64::MAX, -1, 1]", "Some(i64::MAX)"),
      ("&[i64::MAX, 1, -1]", "None"), ("&[i64::MIN, -1]", "None"), ("&[-5, 5]", "Some(0)")),
    T("lcm_of", "values: &[u64]", "Option<u64>", MEDIUM, "math overflow option",
      r"""
      Returns the least common multiple of all the values. If any value is 0 the result is `Some(0)`.
      Otherwise returns `None` for an empty slice or when the result does not fit in a `u64`.
      """,
      r"""
      fn gcd_u64(a: u64, b: u64) -> u64 {
          if b == 0 { a } else { gcd_u64(b, a % b) }
      }
      if values.contains(&0) {
          return Some(0);
      }
      if values.is_empty() {
          return None;
      }
      values.iter().try_fold(1u64, |acc, &v| (acc / gcd_u64(acc, v)).checked_mul(v))
      """,
      ("&[4, 6]", "Some(12)"), ("&[]", "None"), ("&[7]", "Some(7)"), ("&[3, 0, 5]", "Some(0)"),
      ("&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "Some(2520)"), ("&[u64::MAX, 2]", "None"),
      ("&[1 << 32, 1 << 31]", "Some(1 << 32)"), ("&[u64::MAX, 0]", "Some(0)")),
    T("to_base", "n: u64, base: u32", "Option<String>", MEDIUM, "math string",
      r"""
      Writes `n` in the given base using the digits `0`-`9` and then lower-case `a`-`z`, without leading
      zeros; zero is written as `"0"`. Returns `None` when the base is not in 2..=36.
      """,
      r"""
      if !(2..=36).contains(&base) {
          return None;
      }
      if n == 0 {
          return Some("0".to_string());
      }
      let (mut n, base) = (n, u64::from(base));
      let mut digits = Vec::new();
      while n > 0 {
          digits.push(char::from_digit((n % base) as u32, base as u32).unwrap());
          n /= base;
      }
      Some(digits.iter().rev().collect())
      """,
      ("255, 16", 'Some("ff".to_string())'), ("0, 2", 'Some("0".to_string())'), ("10, 2", 'Some("1010".to_string())'),
      ("35, 36", 'Some("z".to_string())'), ("5, 1", "None"), ("5, 37", "None"),
      ("u64::MAX, 2", 'Some("1".repeat(64))')),
    T("parse_in_base", "text: &str, base: u32", "Option<u64>", MEDIUM, "math parsing option",
      r"""
      Parses `text` as an unsigned number in the given base (2 to 36), accepting the digits `0`-`9` and the
      letters `a`-`z` in either case. Leading zeros are allowed. Returns `None` if the base is out of range,
      the text is empty, contains any other character (signs and whitespace included), has a digit that is
      not valid in the base, or the value overflows `u64`.
      """,
      r"""
      if !(2..=36).contains(&base) || text.is_empty() {
          return None;
      }
      let mut value: u64 = 0;
      for c in text.chars() {
          let digit = c.to_digit(base)?;
          value = value.checked_mul(u64::from(base))?.checked_add(u64::from(digit))?;
      }
      Some(value)
      """,
      ('"ff", 16', "Some(255)"), ('"102", 2', "None"), ('"FF", 16', "Some(255)"), ('"", 10', "None"),
      ('"+5", 10', "None"), ('"0007", 8', "Some(7)"), ('"zz", 36', "Some(1295)"),
      ('"ffffffffffffffff", 16', "Some(u64::MAX)"),
      ('"10000000000000000", 16', "None"), ('"1", 40', "None"), ('" 1", 10', "None")),
    T("count_primes_below", "n: u32", "usize", MEDIUM, "math primes",
      r"""
      Counts the prime numbers strictly less than `n`. Must handle `n` up to a few million quickly (use a
      sieve).
      """,
      r"""
      let n = n as usize;
      if n < 3 {
          return 0;
      }
      let mut composite = vec![false; n];
      let mut count = 0;
      for i in 2..n {
          if !composite[i] {
              count += 1;
              let mut j = i * i;
              while j < n {
                  composite[j] = true;
                  j += i;
              }
          }
      }
      count
      """,
      ("10", "4"), ("0", "0"), ("2", "0"), ("3", "1"), ("100", "25"), ("1000", "168"), ("100000", "9592")),
    T("prime_factors", "n: u64", "Vec<u64>", MEDIUM, "math primes vec",
      r"""
      Returns the prime factorisation of `n` in ascending order, each prime repeated as often as it divides
      `n`. 0 and 1 have no prime factors. Must not overflow for any `u64`.
      """,
      r"""
      let mut n = n;
      let mut factors = Vec::new();
      if n < 2 {
          return factors;
      }
      let mut d = 2;
      while d <= n / d {
          while n % d == 0 {
              factors.push(d);
              n /= d;
          }
          d += 1;
      }
      if n > 1 {
          factors.push(n);
      }
      factors
      """,
      ("360", "vec![2, 2, 2, 3, 3, 5]"), ("97", "vec![97]"), ("0", "Vec::<u64>::new()"), ("1", "Vec::<u64>::new()"),
      ("600851475143", "vec![71, 839, 1471, 6857]"), ("999962000357", "vec![999979, 999983]"),
      ("1 << 63", "vec![2; 63]")),
    T("int_sqrt", "n: u64", "u64", MEDIUM, "math binary-search",
      r"""
      Returns the integer square root of `n`: the largest `r` with `r * r <= n`. The result must be exact for
      every `u64`, including `u64::MAX` (so do not rely on rounding `f64::sqrt`).
      """,
      r"""
      let (mut low, mut high) = (0u64, u64::from(u32::MAX));
      while low < high {
          let mid = low + (high - low + 1) / 2;
          if mid * mid <= n {
              low = mid;
          } else {
              high = mid - 1;
          }
      }
      low
      """,
      ("15", "3"), ("16", "4"), ("0", "0"), ("1", "1"), ("u64::MAX", "4294967295"), ("1 << 62", "1 << 31"),
      ("999999999999", "999999"), ("(1 << 52) + 1", "1 << 26")),
    T("reverse_digits", "n: u32", "Option<u32>", EASY, "math overflow option",
      r"""
      Returns the decimal digits of `n` in reverse order as a number (so trailing zeros of `n` disappear:
      1200 gives 21), or `None` if the reversed number does not fit in a `u32`.
      """,
      r"""
      let mut n = n;
      let mut out: u32 = 0;
      while n > 0 {
          out = out.checked_mul(10)?.checked_add(n % 10)?;
          n /= 10;
      }
      Some(out)
      """,
      ("1234", "Some(4321)"), ("1200", "Some(21)"), ("0", "Some(0)"), ("7", "Some(7)"),
      ("1000000003", "Some(3000000001)"),
      ("1000000009", "None"), ("u32::MAX", "None")),
    T("is_armstrong", "n: u32", "bool", EASY, "math",
      r"""
      Tells whether `n` equals the sum of its decimal digits, each raised to the power of the number of digits
      (an Armstrong number, like 153 = 1 + 125 + 27). Every single-digit number, 0 included, qualifies.
      """,
      r"""
      let digits: Vec<u64> = n.to_string().bytes().map(|b| u64::from(b - b'0')).collect();
      let power = digits.len() as u32;
      digits.iter().map(|d| d.pow(power)).sum::<u64>() == u64::from(n)
      """,
      ("153", "true"), ("154", "false"), ("0", "true"), ("9", "true"), ("10", "false"), ("9474", "true"),
      ("u32::MAX", "false")),
    T("collatz_steps", "n: u64", "Option<u32>", EASY, "math loop option",
      r"""
      Counts the steps of the Collatz process from `n` down to 1, where an even number is halved and an odd
      number `m` becomes `3 * m + 1`. Starting at 1 takes 0 steps. Returns `None` for 0, which never reaches 1.
      """,
      r"""
      if n == 0 {
          return None;
      }
      let mut n = n;
      let mut steps = 0;
      while n != 1 {
          n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
          steps += 1;
      }
      Some(steps)
      """,
      ("6", "Some(8)"), ("0", "None"), ("1", "Some(0)"), ("16", "Some(4)"), ("27", "Some(111)"), ("97", "Some(118)")),
    T("sum_of_multiples", "limit: u64, factors: &[u64]", "u64", EASY, "math iter",
      r"""
      Adds up every positive number below `limit` that is a multiple of at least one of the factors. Each
      number is counted once even when several factors divide it, and factors equal to 0 are ignored.
      """,
      r"""
      (1..limit).filter(|n| factors.iter().any(|&f| f != 0 && n % f == 0)).sum()
      """,
      ("20, &[3, 5]", "78"), ("10, &[]", "0"), ("10, &[0]", "0"), ("1, &[1]", "0"), ("0, &[2]", "0"),
      ("16, &[4, 6]", "30"),
      ("4, &[1, 1]", "6")),
    T("binomial", "n: u64, k: u64", "Option<u64>", HARD, "math overflow option",
      r"""
      Returns the binomial coefficient "n choose k", the number of ways to pick `k` items out of `n`. It is
      `Some(0)` when `k > n`. Returns `None` exactly when the true value does not fit in a `u64` (intermediate
      steps must not cause a spurious `None`).
      """,
      r"""
      if k > n {
          return Some(0);
      }
      let k = k.min(n - k);
      let mut result: u128 = 1;
      for i in 0..k {
          result = result * u128::from(n - i) / u128::from(i + 1);
          if result > u128::from(u64::MAX) {
              return None;
          }
      }
      Some(result as u64)
      """,
      ("5, 2", "Some(10)"), ("3, 5", "Some(0)"), ("0, 0", "Some(1)"), ("10, 10", "Some(1)"), ("52, 5", "Some(2598960)"),
      ("67, 33", "Some(14226520737620288370)"), ("68, 34", "None"), ("u64::MAX, 1", "Some(u64::MAX)"),
      ("u64::MAX, u64::MAX - 1", "Some(u64::MAX)"), ("u64::MAX, 2", "None")),
    T("reduce_fraction", "num: i64, den: i64", "Option<(i64, i64)>", MEDIUM, "math option",
      r"""
      Reduces the fraction `num / den` to lowest terms and returns `(numerator, denominator)` with a positive
      denominator (any minus sign moves to the numerator). A zero numerator gives `(0, 1)`. Returns `None`
      when `den` is 0. Neither input is ever `i64::MIN`.
      """,
      r"""
      if den == 0 {
          return None;
      }
      let (mut a, mut b) = (num.unsigned_abs(), den.unsigned_abs());
      while b != 0 {
          (a, b) = (b, a % b);
      }
      let g = a as i64;
      let sign = if den < 0 { -1 } else { 1 };
      Some((sign * num / g, sign * den / g))
      """,
      ("6, 8", "Some((3, 4))"), ("3, -9", "Some((-1, 3))"), ("1, 0", "None"), ("0, -5", "Some((0, 1))"),
      ("-4, -6", "Some((2, 3))"),
      ("7, 13", "Some((7, 13))"), ("-10, 5", "Some((-2, 1))"), ("i64::MAX, i64::MAX", "Some((1, 1))")),
    T("to_roman", "n: u32", "Option<String>", EASY, "string math",
      r"""
      Writes `n` as a Roman numeral in standard form, using the subtractive pairs `IV`, `IX`, `XL`, `XC`,
      `CD` and `CM` (so 4 is `IV`, not `IIII`). Only 1 to 3999 can be written; any other value gives `None`.
      """,
      r"""
      const TABLE: [(u32, &str); 13] = [
          (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"),
          (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
      ];
      if n == 0 || n > 3999 {
          return None;
      }
      let mut n = n;
      let mut out = String::new();
      for (value, symbol) in TABLE {
          while n >= value {
              out.push_str(symbol);
              n -= value;
          }
      }
      Some(out)
      """,
      ("1994", 'Some("MCMXCIV".to_string())'), ("0", "None"), ("4000", "None"),
      ("3999", 'Some("MMMCMXCIX".to_string())'),
      ("1", 'Some("I".to_string())'), ("444", 'Some("CDXLIV".to_string())'), ("58", 'Some("LVIII".to_string())')),
    T("day_of_year", "year: i32, month: u32, day: u32", "Option<u32>", MEDIUM, "date option",
      r"""
      Returns the ordinal day (1-based) of a date within its year, or `None` if the month is not in 1..=12 or
      the day does not exist in that month. February has 29 days in leap years: years divisible by 4, except
      those divisible by 100 but not by 400 (so 2000 is a leap year and 1900 is not).
      """,
      r"""
      let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
      let lengths = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
      if !(1..=12).contains(&month) {
          return None;
      }
      let m = month as usize - 1;
      if day == 0 || day > lengths[m] {
          return None;
      }
      Some(lengths[..m].iter().sum::<u32>() + day)
      """,
      ("2023, 1, 1", "Some(1)"), ("2024, 12, 31", "Some(366)"), ("2023, 12, 31", "Some(365)"), ("2023, 2, 29", "None"),
      ("2000, 3, 1", "Some(61)"), ("1900, 3, 1", "Some(60)"), ("2024, 13, 1", "None"), ("2024, 4, 0", "None"),
      ("2024, 4, 31", "None"), ("2024, 0, 5", "None")),
    T("tribonacci", "n: u32", "Option<u64>", EASY, "math overflow option",
      r"""
      Returns the n-th tribonacci number, where T(0) = 0, T(1) = 0, T(2) = 1 and every later term is the sum of
      the three before it. Returns `None` when the value does not fit in a `u64` (from n = 76 on).
      """,
      r"""
      let mut t = [0u64, 0, 1];
      if n < 3 {
          return Some(t[n as usize]);
      }
      for _ in 3..=n {
          let next = t[0].checked_add(t[1])?.checked_add(t[2])?;
          t = [t[1], t[2], next];
      }
      Some(t[2])
      """,
      ("4", "Some(2)"), ("10", "Some(81)"), ("0", "Some(0)"), ("1", "Some(0)"), ("2", "Some(1)"), ("3", "Some(1)"),
      ("75", "Some(12903063846126135669)"), ("76", "None"), ("u32::MAX", "None")),
    T("pascal_row", "n: usize", "Vec<u64>", EASY, "math vec",
      r"""
      Returns row `n` of Pascal's triangle, counting the top row `[1]` as row 0. Rows up to 60 must be exact.
      """,
      r"""
      let mut row = vec![1u64];
      for _ in 0..n {
          let mut next = vec![1u64; row.len() + 1];
          for i in 1..row.len() {
              next[i] = row[i - 1] + row[i];
          }
          row = next;
      }
      row
      """,
      ("4", "vec![1, 4, 6, 4, 1]"), ("0", "vec![1]"), ("1", "vec![1, 1]"),
      "assert_eq!(pascal_row(20)[10], 184756);", "assert_eq!(pascal_row(30).len(), 31);",
      "assert_eq!(pascal_row(60)[30], 118264581564861424);"),
    T("nth_prime", "n: usize", "u64", MEDIUM, "math primes",
      r"""
      Returns the prime at position `n` in the sequence of primes, counting from zero: position 0 is 2,
      position 1 is 3, position 4 is 11.
      """,
      r"""
      let mut primes: Vec<u64> = Vec::new();
      let mut candidate = 2u64;
      loop {
          if primes.iter().take_while(|&&p| p * p <= candidate).all(|&p| candidate % p != 0) {
              if primes.len() == n {
                  return candidate;
              }
              primes.push(candidate);
          }
          candidate += 1;
      }
      """,
      ("0", "2"), ("4", "11"), ("1", "3"), ("99", "541"), ("10000", "104743")),
    T("mod_pow", "base: u64, exp: u64, modulus: u64", "Option<u64>", MEDIUM, "math overflow",
      r"""
      Computes `base` to the power `exp`, modulo `modulus`, without overflow for any `u64` inputs (use
      square-and-multiply). Anything modulo 1 is 0, and `0` to the power `0` is 1. Returns `None` when
      `modulus` is 0.
      """,
      r"""
      if modulus == 0 {
          return None;
      }
      let m = u128::from(modulus);
      let mut result = 1 % m;
      let mut b = u128::from(base) % m;
      let mut e = exp;
      while e > 0 {
          if e & 1 == 1 {
              result = result * b % m;
          }
          b = b * b % m;
          e >>= 1;
      }
      Some(result as u64)
      """,
      ("2, 10, 1000", "Some(24)"), ("0, 0, 7", "Some(1)"), ("5, 3, 1", "Some(0)"), ("3, 4, 0", "None"),
      ("7, 0, 13", "Some(1)"),
      ("2, 64, 1_000_000_007", "Some(582344008)"), ("u64::MAX, 2, u64::MAX - 1", "Some(1)"),
      ("u64::MAX, u64::MAX, u64::MAX", "Some(0)")),
    T("add_binary", "a: &str, b: &str", "Option<String>", MEDIUM, "string math",
      r"""
      Adds two binary numbers given as strings of `0` and `1` and returns the sum in binary without leading
      zeros (zero is `"0"`). The inputs may have leading zeros and may be far longer than 64 digits. Returns
      `None` if either input is empty or contains any character other than `0` and `1`.
      """,
      r"""
      let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b == b'0' || b == b'1');
      if !valid(a) || !valid(b) {
          return None;
      }
      let (x, y) = (a.as_bytes(), b.as_bytes());
      let (mut i, mut j) = (x.len(), y.len());
      let mut digits = Vec::new();
      let mut carry = 0u8;
      while i > 0 || j > 0 || carry > 0 {
          let mut sum = carry;
          if i > 0 {
              i -= 1;
              sum += x[i] - b'0';
          }
          if j > 0 {
              j -= 1;
              sum += y[j] - b'0';
          }
          digits.push(b'0' + sum % 2);
          carry = sum / 2;
      }
      while digits.len() > 1 && digits.last() == Some(&b'0') {
          digits.pop();
      }
      digits.reverse();
      String::from_utf8(digits).ok()
      """,
      ('"11", "1"', 'Some("100".to_string())'), ('"0011", "01"', 'Some("100".to_string())'),
      ('"0", "0"', 'Some("0".to_string())'), ('"000", "0000"', 'Some("0".to_string())'), ('"", "1"', "None"),
      ('"12", "1"', "None"), ('"1", " 1"', "None"),
      'assert_eq!(add_binary(&"1".repeat(70), "1"), Some(format!("1{}", "0".repeat(70))));'),
    T("passes_luhn", "number: &str", "bool", MEDIUM, "string checksum",
      r"""
      Validates a number with the Luhn checksum. Spaces are ignored; any other non-digit character makes the
      number invalid, and so does having fewer than two digits. Starting from the rightmost digit, every
      second digit is doubled (subtracting 9 when the result exceeds 9); the number is valid when the sum of
      all the digits so obtained is divisible by 10.
      """,
      r"""
      let mut total = 0;
      let mut count = 0;
      for c in number.chars().rev() {
          if c == ' ' {
              continue;
          }
          let Some(mut d) = c.to_digit(10) else {
              return false;
          };
          if count % 2 == 1 {
              d *= 2;
              if d > 9 {
                  d -= 9;
              }
          }
          total += d;
          count += 1;
      }
      count >= 2 && total % 10 == 0
      """,
      ('"4539 3195 0343 6467"', "true"), ('"8273 1232 7352 0569"', "false"), ('"79927398713"', "true"),
      ('"0"', "false"),
      ('" 0 0 "', "true"), ('"059a"', "false"), ('""', "false"), ('"055-444-285"', "false")),
    T("classify_triangle", "a: u32, b: u32, c: u32", "Option<Triangle>", EASY, "enum math option",
      r"""
      Classifies a triangle by its side lengths: `Equilateral` when all three are equal, `Isosceles` when
      exactly two are equal, `Scalene` otherwise. Returns `None` if the sides cannot form a proper triangle:
      a side is 0, or one side is at least as long as the other two together. The sums must not overflow.
      """,
      r"""
      let (a, b, c) = (u64::from(a), u64::from(b), u64::from(c));
      if a == 0 || b == 0 || c == 0 || a >= b + c || b >= a + c || c >= a + b {
          return None;
      }
      Some(if a == b && b == c {
          Triangle::Equilateral
      } else if a == b || b == c || a == c {
          Triangle::Isosceles
      } else {
          Triangle::Scalene
      })
      """,
      ("3, 4, 5", "Some(Triangle::Scalene)"), ("2, 2, 3", "Some(Triangle::Isosceles)"),
      ("3, 3, 3", "Some(Triangle::Equilateral)"),
      ("1, 2, 3", "None"), ("0, 0, 0", "None"), ("5, 2, 2", "None"),
      ("u32::MAX, u32::MAX, 1", "Some(Triangle::Isosceles)"),
      preamble=r"""
      #[derive(Debug, Clone, Copy, PartialEq, Eq)]
      pub enum Triangle {
          Equilateral,
          Isosceles,
          Scalene,
      }
      """),
    T("classify_by_divisors", "n: u64", "Option<Abundance>", MEDIUM, "enum math option",
      r"""
      Compares `n` with the sum of its proper divisors (the divisors smaller than `n`; 1 has none): the result
      is `Perfect` if they are equal, `Abundant` if the sum is larger and `Deficient` if it is smaller. Returns
      `None` for 0. Should be fast for `n` up to about 10^12.
      """,
      r"""
      if n == 0 {
          return None;
      }
      let mut sum = 0u64;
      let mut d = 1;
      while d <= n / d {
          if n % d == 0 {
              sum += d;
              if n / d != d {
                  sum += n / d;
              }
          }
          d += 1;
      }
      sum -= n;
      Some(match sum.cmp(&n) {
          std::cmp::Ordering::Less => Abundance::Deficient,
          std::cmp::Ordering::Equal => Abundance::Perfect,
          std::cmp::Ordering::Greater => Abundance::Abundant,
      })
      """,
      ("6", "Some(Abundance::Perfect)"), ("12", "Some(Abundance::Abundant)"), ("1", "Some(Abundance::Deficient)"),
      ("0", "None"), ("13", "Some(Abundance::Deficient)"), ("28", "Some(Abundance::Perfect)"),
      ("945", "Some(Abundance::Abundant)"),
      ("33550336", "Some(Abundance::Perfect)"),
      preamble=r"""
      #[derive(Debug, Clone, Copy, PartialEq, Eq)]
      pub enum Abundance {
          Deficient,
          Perfect,
          Abundant,
      }
      """),
    T("ordinal", "n: u32", "String", EASY, "string format",
      r"""
      Writes `n` followed by its English ordinal suffix: `st`, `nd` and `rd` for numbers ending in 1, 2 and 3,
      except that numbers ending in 11, 12 and 13 take `th`, as do all other numbers (0 gives `"0th"`).
      """,
      r"""
      let suffix = match (n % 10, n % 100) {
          (_, 11..=13) => "th",
          (1, _) => "st",
          (2, _) => "nd",
          (3, _) => "rd",
          _ => "th",
      };
      format!("{}{}", n, suffix)
      """,
      ("1", '"1st"'), ("12", '"12th"'), ("2", '"2nd"'), ("3", '"3rd"'), ("4", '"4th"'), ("11", '"11th"'),
      ("13", '"13th"'),
      ("21", '"21st"'), ("0", '"0th"'), ("111", '"111th"'), ("1002", '"1002nd"')),
    T("with_thousands_separators", "n: i64", "String", EASY, "string format",
      r"""
      Formats an integer with a comma between groups of three digits, counting from the right. A negative
      number keeps its minus sign in front of the first digit. The whole `i64` range is supported.
      """,
      r"""
      let digits = n.unsigned_abs().to_string();
      let mut out = String::new();
      for (i, c) in digits.chars().enumerate() {
          if i > 0 && (digits.len() - i) % 3 == 0 {
              out.push(',');
          }
          out.push(c);
      }
      if n < 0 { format!("-{}", out) } else { out }
      """,
      ("1234567", '"1,234,567"'), ("-1000", '"-1,000"'), ("0", '"0"'), ("999", '"999"'), ("100000", '"100,000"'),
      ("-5", '"-5"'), ("i64::MIN", '"-9,223,372,036,854,775,808"')),
    T("gray_code", "bits: u32", "Vec<u32>", MEDIUM, "math bits recursion",
      r"""
      Returns the reflected binary Gray code on `bits` bits: 2^bits values, starting at 0, in which neighbours
      differ in exactly one bit. For 0 bits the sequence is `[0]`; the sequence for b bits is the one for
      b - 1 bits followed by that same sequence reversed with bit b - 1 set. `bits` is at most 20.
      """,
      r"""
      (0..1u32 << bits).map(|i| i ^ (i >> 1)).collect()
      """,
      ("2", "vec![0, 1, 3, 2]"), ("0", "vec![0]"), ("1", "vec![0, 1]"), ("3", "vec![0, 1, 3, 2, 6, 7, 5, 4]"),
      "assert_eq!(gray_code(10).len(), 1024);", "assert_eq!(gray_code(4)[15], 8);"),
    # ---------------------------------------------------------------- slices and vectors
    T("max_window_sum", "values: &[i64], k: usize", "Option<i64>", EASY, "slice window option",
      r"""
      Returns the largest sum of `k` consecutive values, or `None` when `k` is 0 or larger than the length of
      the slice.
      """,
      r"""
      if k == 0 {
          return None;
      }
      values.windows(k).map(|w| w.iter().sum::<i64>()).max()
      """,
      ("&[1, 4, 2, 10, 2, 3, 1, 0, 20], 4", "Some(24)"), ("&[1, 2], 3", "None"), ("&[], 1", "None"),
      ("&[5], 0", "None"),
      ("&[-3, -1, -2], 2", "Some(-3)"), ("&[7], 1", "Some(7)")),
    T("prefix_maxima", "values: &[i32]", "Vec<i32>", EASY, "slice iter",
      r"""
      Returns, for every position, the largest value seen so far: element `i` of the result is the maximum of
      `values[0..=i]`.
      """,
      r"""
      let mut out: Vec<i32> = Vec::with_capacity(values.len());
      for &v in values {
          let best = out.last().map_or(v, |&m| m.max(v));
          out.push(best);
      }
      out
      """,
      ("&[3, 1, 4, 1, 5]", "vec![3, 3, 4, 4, 5]"), ("&[-5, -7, -2]", "vec![-5, -5, -2]"), ("&[]", "Vec::<i32>::new()"),
      ("&[2, 2]", "vec![2, 2]"), ("&[9, 1]", "vec![9, 9]")),
    T("dedup_adjacent", "values: &[i32]", "Vec<i32>", EASY, "slice vec",
      r"""
      Collapses each run of equal neighbouring values into a single value. A value that reappears later,
      after a different value, is kept again.
      """,
      r"""
      let mut out = values.to_vec();
      out.dedup();
      out
      """,
      ("&[1, 1, 2, 2, 2, 1, 3, 3]", "vec![1, 2, 1, 3]"), ("&[0, 0, 0]", "vec![0]"), ("&[]", "Vec::<i32>::new()"),
      ("&[4]", "vec![4]"), ("&[1, 2, 1]", "vec![1, 2, 1]")),
    T("intersect_sorted", "a: &[i32], b: &[i32]", "Vec<i32>", MEDIUM, "slice two-pointers",
      r"""
      Given two slices sorted in ascending order, returns the values they have in common, in ascending order.
      A value occurring `m` times in `a` and `n` times in `b` occurs `min(m, n)` times in the result.
      """,
      r"""
      let (mut i, mut j) = (0, 0);
      let mut out = Vec::new();
      while i < a.len() && j < b.len() {
          if a[i] < b[j] {
              i += 1;
          } else if a[i] > b[j] {
              j += 1;
          } else {
              out.push(a[i]);
              i += 1;
              j += 1;
          }
      }
      out
      """,
      ("&[1, 2, 2, 3], &[2, 2, 2, 4]", "vec![2, 2]"), ("&[1, 3, 5], &[2, 4, 6]", "Vec::<i32>::new()"),
      ("&[], &[1]", "Vec::<i32>::new()"), ("&[-3, -1, 0, 0, 7], &[-1, 0, 7, 7]", "vec![-1, 0, 7]"),
      ("&[5, 5], &[5, 5]", "vec![5, 5]")),
    T("first_not_less", "values: &[i32], target: i32", "usize", MEDIUM, "slice binary-search",
      r"""
      Given a slice sorted in ascending order (repeats allowed), returns the index of the first element that
      is greater than or equal to `target`, or `values.len()` if there is none. Should take O(log n) time.
      """,
      r"""
      let (mut low, mut high) = (0, values.len());
      while low < high {
          let mid = low + (high - low) / 2;
          if values[mid] < target {
              low = mid + 1;
          } else {
              high = mid;
          }
      }
      low
      """,
      ("&[1, 3, 3, 5], 3", "1"), ("&[1, 3, 3, 5], 4", "3"), ("&[], 7", "0"), ("&[1, 2], 9", "2"), ("&[4, 5], -1", "0"),
      ("&[2, 2, 2], 2", "0")),
    T("two_indices_summing", "values: &[i32], target: i32", "Option<(usize, usize)>", MEDIUM, "slice hashmap option",
      r"""
      Finds indices `i < j` with `values[i] + values[j] == target`, where the sum is computed without
      overflow. If several pairs qualify, returns the one with the smallest `j`, and for that `j` the smallest
      `i`. Returns `None` when there is no such pair. Should run in about linear time.
      """,
      r"""
      let mut first_index: HashMap<i64, usize> = HashMap::new();
      for (j, &v) in values.iter().enumerate() {
          if let Some(&i) = first_index.get(&(i64::from(target) - i64::from(v))) {
              return Some((i, j));
          }
          first_index.entry(i64::from(v)).or_insert(j);
      }
      None
      """,
      ("&[2, 7, 11, 15], 9", "Some((0, 1))"), ("&[1, 2, 3], 7", "None"), ("&[3, 3], 6", "Some((0, 1))"),
      ("&[], 0", "None"),
      ("&[1, 1, 5], 6", "Some((0, 2))"), ("&[0, -3, 5, 3], 0", "Some((1, 3))"),
      ("&[i32::MAX, 1, i32::MIN], -1", "Some((0, 2))"),
      ("&[4], 8", "None"),
      preamble="use std::collections::HashMap;"),
    T("zeros_to_back", "values: &[i32]", "Vec<i32>", EASY, "slice vec",
      r"""
      Returns the values with every zero moved to the end, keeping the other values in their original order.
      """,
      r"""
      let mut out: Vec<i32> = values.iter().copied().filter(|&v| v != 0).collect();
      out.resize(values.len(), 0);
      out
      """,
      ("&[0, 1, 0, 3, 12]", "vec![1, 3, 12, 0, 0]"), ("&[0, -5]", "vec![-5, 0]"), ("&[]", "Vec::<i32>::new()"),
      ("&[0, 0]", "vec![0, 0]"), ("&[-1, 2]", "vec![-1, 2]")),
    T("chunk_sums", "values: &[i64], size: usize", "Vec<i64>", EASY, "slice iter",
      r"""
      Splits the values into consecutive chunks of `size` elements (the last chunk may be shorter) and returns
      the sum of each chunk. A `size` of 0 gives an empty vector.
      """,
      r"""
      if size == 0 {
          return Vec::new();
      }
      values.chunks(size).map(|chunk| chunk.iter().sum()).collect()
      """,
      ("&[1, 2, 3, 4, 5], 2", "vec![3, 7, 5]"), ("&[1, 2, 3], 0", "Vec::<i64>::new()"), ("&[], 3", "Vec::<i64>::new()"),
      ("&[1, 2, 3], 5", "vec![6]"), ("&[-1, 1, -1, 1], 2", "vec![0, 0]")),
    T("majority_value", "values: &[i32]", "Option<i32>", MEDIUM, "slice option",
      r"""
      Returns the value that occurs in strictly more than half of the positions, or `None` if no value does
      (exactly half is not enough).
      """,
      r"""
      let mut candidate = None;
      let mut count = 0usize;
      for &v in values {
          if count == 0 {
              candidate = Some(v);
              count = 1;
          } else if candidate == Some(v) {
              count += 1;
          } else {
              count -= 1;
          }
      }
      let c = candidate?;
      if values.iter().filter(|&&v| v == c).count() * 2 > values.len() { Some(c) } else { None }
      """,
      ("&[3, 3, 4, 2, 3, 3]", "Some(3)"), ("&[1, 1, 2, 2]", "None"), ("&[]", "None"), ("&[1, 2]", "None"),
      ("&[1, 2, 1]", "Some(1)"), ("&[-7]", "Some(-7)"), ("&[2, 1, 1, 3, 1]", "Some(1)")),
    T("max_subarray_sum", "values: &[i64]", "Option<i64>", MEDIUM, "slice dp option",
      r"""
      Returns the largest sum of a non-empty run of consecutive values, or `None` for an empty slice. When
      every value is negative the answer is the largest single value.
      """,
      r"""
      let (&first, rest) = values.split_first()?;
      let (mut best, mut current) = (first, first);
      for &v in rest {
          current = v.max(current + v);
          best = best.max(current);
      }
      Some(best)
      """,
      ("&[-2, 1, -3, 4, -1, 2, 1, -5, 4]", "Some(6)"), ("&[-3, -1, -2]", "Some(-1)"), ("&[]", "None"),
      ("&[5]", "Some(5)"),
      ("&[1, 2, 3]", "Some(6)"), ("&[2, -10, 3]", "Some(3)")),
    T("longest_rising_run", "values: &[i32]", "usize", EASY, "slice window",
      r"""
      Returns the length of the longest run of neighbouring elements in which each element is strictly
      greater than the one before it. A single element is a run of length 1; an empty slice gives 0.
      """,
      r"""
      if values.is_empty() {
          return 0;
      }
      let (mut best, mut current) = (1, 1);
      for pair in values.windows(2) {
          current = if pair[1] > pair[0] { current + 1 } else { 1 };
          best = best.max(current);
      }
      best
      """,
      ("&[1, 3, 5, 4, 7]", "3"), ("&[2, 2, 2]", "1"), ("&[]", "0"), ("&[5]", "1"), ("&[1, 2, 3, 4]", "4"),
      ("&[3, 2, 1]", "1")),
    T("interleave", "a: &[i32], b: &[i32]", "Vec<i32>", EASY, "slice vec",
      r"""
      Alternates the elements of `a` and `b`, starting with `a`. When one slice runs out, the remaining elements
      of the other follow in order.
      """,
      r"""
      let mut out = Vec::with_capacity(a.len() + b.len());
      for i in 0..a.len().max(b.len()) {
          if let Some(&x) = a.get(i) {
              out.push(x);
          }
          if let Some(&y) = b.get(i) {
              out.push(y);
          }
      }
      out
      """,
      ("&[1, 3, 5], &[2, 4]", "vec![1, 2, 3, 4, 5]"), ("&[1], &[2, 3, 4]", "vec![1, 2, 3, 4]"),
      ("&[], &[7, 8]", "vec![7, 8]"),
      ("&[], &[]", "Vec::<i32>::new()"), ("&[9, 9], &[]", "vec![9, 9]")),
    T("smallest_missing_positive", "values: &[i32]", "i32", MEDIUM, "slice hashset",
      r"""
      Returns the smallest positive integer (1, 2, 3, ...) that does not occur in the slice. Zero, negative
      values and duplicates may be present.
      """,
      r"""
      let present: HashSet<i32> = values.iter().copied().filter(|&v| v > 0).collect();
      (1..).find(|v| !present.contains(v)).unwrap()
      """,
      ("&[3, 4, -1, 1]", "2"), ("&[1, 2, 3]", "4"), ("&[]", "1"), ("&[7, 8, 9]", "1"), ("&[-1, -2, 0]", "1"),
      ("&[2, 1, 2, 1]", "3"),
      preamble="use std::collections::HashSet;"),
    T("merge_intervals", "intervals: &[(i32, i32)]", "Vec<(i32, i32)>", MEDIUM, "slice sorting",
      r"""
      Merges overlapping intervals. Each interval `(start, end)` has `start <= end` and includes both ends;
      two intervals are merged when the later-starting one starts at or before the end of the other (so
      `(1, 4)` and `(4, 5)` merge, but `(1, 3)` and `(4, 5)` do not). The input may be in any order; the
      result is sorted by start.
      """,
      r"""
      let mut sorted = intervals.to_vec();
      sorted.sort_unstable();
      let mut out: Vec<(i32, i32)> = Vec::new();
      for (start, end) in sorted {
          match out.last_mut() {
              Some(last) if start <= last.1 => last.1 = last.1.max(end),
              _ => out.push((start, end)),
          }
      }
      out
      """,
      ("&[(1, 3), (2, 6), (8, 10), (15, 18)]", "vec![(1, 6), (8, 10), (15, 18)]"),
      ("&[(1, 4), (4, 5)]", "vec![(1, 5)]"),
      ("&[]", "Vec::<(i32, i32)>::new()"), ("&[(5, 6), (1, 2)]", "vec![(1, 2), (5, 6)]"),
      ("&[(1, 10), (2, 3)]", "vec![(1, 10)]"),
      ("&[(-5, -1), (0, 0), (-1, 0)]", "vec![(-5, 0)]"), ("&[(1, 3), (4, 5)]", "vec![(1, 3), (4, 5)]")),
    T("split_by_parity", "values: &[i32]", "(Vec<i32>, Vec<i32>)", EASY, "slice iter",
      r"""
      Splits the values into `(evens, odds)`, each in the original order. Negative numbers follow the same rule:
      -4 is even and -3 is odd.
      """,
      r"""
      values.iter().copied().partition(|v| v % 2 == 0)
      """,
      ("&[1, 2, 3, 4]", "(vec![2, 4], vec![1, 3])"), ("&[-3, -4, 0]", "(vec![-4, 0], vec![-3])"),
      ("&[]", "(Vec::<i32>::new(), Vec::<i32>::new())"), ("&[7]", "(Vec::<i32>::new(), vec![7])")),
    T("product_except_self", "values: &[i64]", "Vec<i64>", MEDIUM, "slice prefix",
      r"""
      Returns a vector whose element `i` is the product of all the values except `values[i]`. Do not divide:
      zeros must be handled. An empty slice gives an empty vector and a single value gives `[1]`. All the
      products involved fit in an `i64`.
      """,
      r"""
      let n = values.len();
      let mut out = vec![1i64; n];
      let mut prefix = 1i64;
      for i in 0..n {
          out[i] = prefix;
          prefix *= values[i];
      }
      let mut suffix = 1i64;
      for i in (0..n).rev() {
          out[i] *= suffix;
          suffix *= values[i];
      }
      out
      """,
      ("&[1, 2, 3, 4]", "vec![24, 12, 8, 6]"), ("&[0, 2, 3]", "vec![6, 0, 0]"), ("&[]", "Vec::<i64>::new()"),
      ("&[5]", "vec![1]"),
      ("&[0, 0, 3]", "vec![0, 0, 0]"), ("&[-1, 2, -3]", "vec![-6, 3, -2]")),
    T("kth_smallest", "values: &[i32], k: usize", "Option<i32>", EASY, "slice sorting option",
      r"""
      Returns the `k`-th smallest value, counting from 1 and counting repeated values separately, or `None`
      when `k` is 0 or greater than the number of values.
      """,
      r"""
      if k == 0 || k > values.len() {
          return None;
      }
      let mut sorted = values.to_vec();
      sorted.sort_unstable();
      Some(sorted[k - 1])
      """,
      ("&[7, 10, 4, 3, 20, 15], 3", "Some(7)"), ("&[2, 2, 1], 3", "Some(2)"), ("&[], 1", "None"),
      ("&[5, 1], 0", "None"),
      ("&[2, 2, 1], 2", "Some(2)"), ("&[-1], 1", "Some(-1)"), ("&[1, 2], 3", "None")),
    T("is_monotonic", "values: &[i32]", "bool", EASY, "slice window",
      r"""
      Tells whether the values never decrease or never increase along the slice. Empty, single-element and
      constant slices are monotonic.
      """,
      r"""
      values.windows(2).all(|w| w[0] <= w[1]) || values.windows(2).all(|w| w[0] >= w[1])
      """,
      ("&[1, 2, 2, 3]", "true"), ("&[1, 3, 2]", "false"), ("&[6, 5, 4, 4]", "true"), ("&[]", "true"), ("&[9]", "true"),
      ("&[3, 3, 3]", "true"), ("&[1, 1, 0, 2]", "false")),
    T("trapped_rain", "heights: &[u32]", "u64", HARD, "slice two-pointers",
      r"""
      Bars of the given heights stand side by side, each one unit wide. Returns how many units of water are
      trapped between them after rain; water spills off both ends, so the first and last bars hold none above
      them. Should run in linear time.
      """,
      r"""
      if heights.is_empty() {
          return 0;
      }
      let (mut left, mut right) = (0, heights.len() - 1);
      let (mut left_max, mut right_max) = (0u32, 0u32);
      let mut water = 0u64;
      while left < right {
          if heights[left] < heights[right] {
              left_max = left_max.max(heights[left]);
              water += u64::from(left_max - heights[left]);
              left += 1;
          } else {
              right_max = right_max.max(heights[right]);
              water += u64::from(right_max - heights[right]);
              right -= 1;
          }
      }
      water
      """,
      ("&[0, 1, 0, 2, 1, 0, 1, 3, 2, 1, 2, 1]", "6"), ("&[4, 2, 0, 3, 2, 5]", "9"), ("&[]", "0"), ("&[5]", "0"),
      ("&[3, 0, 3]", "3"), ("&[1, 2, 3]", "0"), ("&[5, 0, 0, 0, 1]", "3"), ("&[u32::MAX, 0, u32::MAX]", "4294967295")),
    T("next_arrangement", "values: &[i32]", "Vec<i32>", HARD, "slice permutation",
      r"""
      Returns the next permutation of the values in lexicographic order: the smallest arrangement of the same
      values that is greater than the given one. If the values are already in their greatest (non-increasing)
      order, returns them sorted in ascending order instead. Repeated values are allowed.
      """,
      r"""
      let mut v = values.to_vec();
      if v.len() < 2 {
          return v;
      }
      let mut i = v.len() - 1;
      while i > 0 && v[i - 1] >= v[i] {
          i -= 1;
      }
      if i == 0 {
          v.reverse();
          return v;
      }
      let mut j = v.len() - 1;
      while v[j] <= v[i - 1] {
          j -= 1;
      }
      v.swap(i - 1, j);
      v[i..].reverse();
      v
      """,
      ("&[1, 2, 3]", "vec![1, 3, 2]"), ("&[3, 2, 1]", "vec![1, 2, 3]"), ("&[1, 1, 5]", "vec![1, 5, 1]"),
      ("&[]", "Vec::<i32>::new()"),
      ("&[7]", "vec![7]"), ("&[1, 3, 2]", "vec![2, 1, 3]"), ("&[2, 2]", "vec![2, 2]"), ("&[1, 5, 1]", "vec![5, 1, 1]")),
    T("top_k_frequent", "values: &[i32], k: usize", "Vec<i32>", MEDIUM, "hashmap sorting",
      r"""
      Returns the `k` most frequent values, most frequent first; values that occur equally often are ordered
      from smallest to largest. If there are fewer than `k` distinct values, all of them are returned.
      """,
      r"""
      let mut counts: HashMap<i32, usize> = HashMap::new();
      for &v in values {
          *counts.entry(v).or_insert(0) += 1;
      }
      let mut entries: Vec<(i32, usize)> = counts.into_iter().collect();
      entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
      entries.into_iter().take(k).map(|(v, _)| v).collect()
      """,
      ("&[1, 1, 1, 2, 2, 3], 2", "vec![1, 2]"), ("&[4, 4, 5, 5, 6], 2", "vec![4, 5]"), ("&[], 3", "Vec::<i32>::new()"),
      ("&[4, 4, 5, 5, 6], 0", "Vec::<i32>::new()"), ("&[9, 8, 7], 5", "vec![7, 8, 9]"), ("&[-1, -1, 2], 1", "vec![-1]"),
      preamble="use std::collections::HashMap;"),
    T("next_greater_values", "values: &[i32]", "Vec<Option<i32>>", MEDIUM, "slice stack",
      r"""
      For every element, finds the first element to its right that is strictly greater, or `None` if there is
      none. Should run in linear time.
      """,
      r"""
      let mut out = vec![None; values.len()];
      let mut stack: Vec<usize> = Vec::new();
      for (i, &v) in values.iter().enumerate() {
          while let Some(&j) = stack.last() {
              if values[j] >= v {
                  break;
              }
              out[j] = Some(v);
              stack.pop();
          }
          stack.push(i);
      }
      out
      """,
      ("&[2, 1, 2, 4, 3]", "vec![Some(4), Some(2), Some(4), None, None]"), ("&[1, 1]", "vec![None, None]"),
      ("&[]", "Vec::<Option<i32>>::new()"), ("&[5, 4, 3]", "vec![None, None, None]"),
      ("&[1, 3, 2, 4]", "vec![Some(3), Some(4), Some(4), None]")),
    T("best_trade_profit", "prices: &[u32]", "u32", EASY, "slice",
      r"""
      Given a price for each day, returns the largest profit from buying on one day and selling on a later day.
      Returns 0 when no profit is possible, including when there are fewer than two prices.
      """,
      r"""
      let mut lowest = u32::MAX;
      let mut best = 0;
      for &p in prices {
          lowest = lowest.min(p);
          best = best.max(p - lowest);
      }
      best
      """,
      ("&[7, 1, 5, 3, 6, 4]", "5"), ("&[7, 6, 4, 3, 1]", "0"), ("&[]", "0"), ("&[5]", "0"), ("&[1, 2]", "1"),
      ("&[2, 4, 1, 3]", "2")),
    T("can_reach_last", "jumps: &[usize]", "bool", MEDIUM, "slice greedy",
      r"""
      Starting at index 0, from index `i` you may jump forward by any number of places from 1 up to `jumps[i]`.
      Tells whether the last index can be reached. A one-element slice is already at its last index; an empty
      slice gives `false`. Jump lengths may be as large as `usize::MAX`.
      """,
      r"""
      if jumps.is_empty() {
          return false;
      }
      let mut reach = 0usize;
      for (i, &jump) in jumps.iter().enumerate() {
          if i > reach {
              return false;
          }
          reach = reach.max(i.saturating_add(jump));
      }
      true
      """,
      ("&[2, 3, 1, 1, 4]", "true"), ("&[3, 2, 1, 0, 4]", "false"), ("&[]", "false"), ("&[0]", "true"),
      ("&[0, 1]", "false"),
      ("&[1, 0, 1]", "false"), ("&[usize::MAX, 0, 0]", "true")),
    T("count_subarrays_with_sum", "values: &[i32], target: i64", "usize", HARD, "slice prefix hashmap",
      r"""
      Counts the non-empty runs of consecutive elements whose sum equals `target`. Values may be negative or
      zero. Should run in about linear time (use prefix sums).
      """,
      r"""
      let mut seen: HashMap<i64, usize> = HashMap::new();
      seen.insert(0, 1);
      let (mut prefix, mut count) = (0i64, 0usize);
      for &v in values {
          prefix += i64::from(v);
          count += seen.get(&(prefix - target)).copied().unwrap_or(0);
          *seen.entry(prefix).or_insert(0) += 1;
      }
      count
      """,
      ("&[1, 1, 1], 2", "2"), ("&[1, 2, 3], 3", "2"), ("&[], 0", "0"), ("&[0, 0, 0], 0", "6"),
      ("&[1, -1, 1, -1], 0", "4"),
      ("&[3, 4, 7, 2, -3, 1, 4, 2], 7", "4"), ("&[5], 6", "0"), ("&[i32::MAX, i32::MAX], 4294967294", "1"),
      preamble="use std::collections::HashMap;"),
    # ---------------------------------------------------------------- strings and chars
    T("swap_case", "text: &str", "String", EASY, "string unicode",
      r"""
      Turns upper-case letters into lower case and lower-case letters into upper case, leaving every other
      character as it is. Works for non-ASCII letters too (`é` becomes `É`, `Γ` becomes `γ`).
      """,
      r"""
      let mut out = String::with_capacity(text.len());
      for c in text.chars() {
          if c.is_uppercase() {
              out.extend(c.to_lowercase());
          } else if c.is_lowercase() {
              out.extend(c.to_uppercase());
          } else {
              out.push(c);
          }
      }
      out
      """,
      ('"Hello, World!"', '"hELLO, wORLD!"'), ('"Ärger éclair"', '"äRGER ÉCLAIR"'), ('""', '""'), ('"123"', '"123"'),
      ('"ΑβΓ"', '"αΒγ"')),
    T("is_pangram", "text: &str", "bool", EASY, "string",
      r"""
      Tells whether the text contains every letter of the English alphabet `a`-`z` at least once, in either
      case. Non-ASCII letters do not count.
      """,
      r"""
      let mut seen = [false; 26];
      for b in text.bytes() {
          if b.is_ascii_alphabetic() {
              seen[(b.to_ascii_lowercase() - b'a') as usize] = true;
          }
      }
      seen.iter().all(|&s| s)
      """,
      ('"The quick brown fox jumps over the lazy dog"', "true"), ('"abcdefghijklmnopqrstuvwxy"', "false"),
      ('""', "false"),
      ('"ABCDEFGHIJKLMNOPQRSTUVWXYZ"', "true"), ('"Pack my box with five dozen liquor jugs!"', "true")),
    T("run_length_encode", "text: &str", "String", MEDIUM, "string rle",
      r"""
      Compresses runs of repeated characters: each maximal run becomes its length followed by the character,
      and the length is left out when the run has length 1 (`"aaab"` becomes `"3ab"`). Works on `char`s, so
      non-ASCII characters are fine. The input never contains digits.
      """,
      r"""
      let mut out = String::new();
      let mut chars = text.chars().peekable();
      while let Some(c) = chars.next() {
          let mut run = 1;
          while chars.peek() == Some(&c) {
              chars.next();
              run += 1;
          }
          if run > 1 {
              out.push_str(&run.to_string());
          }
          out.push(c);
      }
      out
      """,
      ('"aaabcc"', '"3ab2c"'), ('"abc"', '"abc"'), ('""', '""'), ('"wwwwwwwwwwwwb"', '"12wb"'), ('"  x"', '"2 x"'),
      ('"ééé"', '"3é"'),
      ('"aabaa"', '"2ab2a"')),
    T("run_length_decode", "text: &str", "Option<String>", MEDIUM, "string rle parsing option",
      r"""
      Expands run-length encoded text: a decimal count (one or more digits) before a character repeats that
      character count times, and a character without a count appears once (`"3ab2c"` becomes `"aaabcc"`).
      Returns `None` if the text ends with a count or a count starts with the digit `0`.
      """,
      r"""
      let mut out = String::new();
      let mut count = String::new();
      for c in text.chars() {
          if c.is_ascii_digit() {
              if count.is_empty() && c == '0' {
                  return None;
              }
              count.push(c);
          } else {
              let n: usize = if count.is_empty() { 1 } else { count.parse().ok()? };
              out.extend(std::iter::repeat(c).take(n));
              count.clear();
          }
      }
      if count.is_empty() { Some(out) } else { None }
      """,
      ('"3ab2c"', 'Some("aaabcc".to_string())'), ('"ab3"', "None"), ('""', "Some(String::new())"),
      ('"12wb"', 'Some("wwwwwwwwwwwwb".to_string())'), ('"0a"', "None"), ('"03a"', "None"),
      ('"2é"', 'Some("éé".to_string())'),
      ('"10x"', 'Some("x".repeat(10))')),
    T("word_frequencies", "text: &str", "BTreeMap<String, usize>", MEDIUM, "string btreemap unicode",
      r"""
      Counts how often each word occurs, ignoring case. A word is a maximal run of alphanumeric characters
      (Unicode-aware, so `über` is one word); every other character separates words. The keys are the
      lower-cased words.
      """,
      r"""
      let mut counts = BTreeMap::new();
      for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
          *counts.entry(word.to_lowercase()).or_insert(0) += 1;
      }
      counts
      """,
      ('"The cat and the hat."',
       'BTreeMap::from([("and".to_string(), 1), ("cat".to_string(), 1), ("hat".to_string(), 1), '
       '("the".to_string(), 2)])'),
      ('""', "BTreeMap::new()"), ('"--!!--"', "BTreeMap::new()"),
      ('"Über über ÜBER"', 'BTreeMap::from([("über".to_string(), 3)])'),
      r'''
      let counts = word_frequencies("it's 2 o'clock, it's");
      assert_eq!(counts.len(), 5);
      assert_eq!(counts["it"], 2);
      assert_eq!(counts["s"], 2);
      assert_eq!(counts["2"], 1);
      ''',
      preamble="use std::collections::BTreeMap;"),
    T("caesar_shift", "text: &str, shift: i32", "String", EASY, "string cipher",
      r"""
      Shifts every ASCII letter `shift` places along the alphabet, wrapping around and keeping its case.
      Negative shifts go backwards and shifts beyond 26 wrap. Every other character, including non-ASCII
      letters, is left as it is.
      """,
      r"""
      let shift = shift.rem_euclid(26) as u8;
      text.chars()
          .map(|c| {
              if c.is_ascii_lowercase() {
                  ((c as u8 - b'a' + shift) % 26 + b'a') as char
              } else if c.is_ascii_uppercase() {
                  ((c as u8 - b'A' + shift) % 26 + b'A') as char
              } else {
                  c
              }
          })
          .collect()
      """,
      ('"Hello, World!", 3', '"Khoor, Zruog!"'), ('"abc", -1', '"zab"'), ('"", 5', '""'), ('"xyz", 29', '"abc"'),
      ('"Zebra", 26', '"Zebra"'), ('"héllo", 1', '"iémmp"'), ('"ABC", -27', '"ZAB"'), ('"abc", i32::MIN', '"cde"')),
    T("vigenere", "text: &str, key: &str", "Option<String>", MEDIUM, "string cipher option",
      r"""
      Encrypts `text` with the Vigenère cipher. The key must be non-empty and made only of ASCII letters (case
      does not matter), otherwise the result is `None`. Each ASCII letter of the text is shifted forward by the
      alphabet position of the current key letter (`a` shifts by 0, `b` by 1, ...) and keeps its case; only
      letters consume key letters, and the key repeats as needed. Other characters are copied unchanged.
      """,
      r"""
      if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
          return None;
      }
      let shifts: Vec<u8> = key.bytes().map(|b| b.to_ascii_lowercase() - b'a').collect();
      let mut k = 0;
      let mut out = String::with_capacity(text.len());
      for c in text.chars() {
          let base = if c.is_ascii_lowercase() {
              b'a'
          } else if c.is_ascii_uppercase() {
              b'A'
          } else {
              out.push(c);
              continue;
          };
          out.push(((c as u8 - base + shifts[k % shifts.len()]) % 26 + base) as char);
          k += 1;
      }
      Some(out)
      """,
      ('"attack at dawn", "LEMON"', 'Some("lxfopv ef rnhr".to_string())'), ('"abc", ""', "None"),
      ('"abc", "k3y"', "None"),
      ('"", "key"', "Some(String::new())"), ('"Hello", "a"', 'Some("Hello".to_string())'),
      ('"xyz", "b"', 'Some("yza".to_string())'),
      ('"Zz!", "bB"', 'Some("Aa!".to_string())'), ('"é-a", "c"', 'Some("é-c".to_string())')),
    T("parse_i64", "text: &str", "Result<i64, IntError>", HARD, "parsing result enum overflow",
      r"""
      Parses a decimal integer with an optional leading `+` or `-` sign. Characters are examined from left to
      right and the first problem is reported: `IntError::Empty` when there are no digits at all (an empty text
      or a lone sign); `IntError::InvalidDigit(c)` for the first character `c` after the optional sign that is
      not an ASCII digit (whitespace and a second sign included); `IntError::Overflow` as soon as the value
      read so far does not fit in an `i64`. `i64::MIN` itself parses fine, and leading zeros are allowed.
      """,
      r"""
      let (negative, digits) = match text.strip_prefix('-') {
          Some(rest) => (true, rest),
          None => (false, text.strip_prefix('+').unwrap_or(text)),
      };
      if digits.is_empty() {
          return Err(IntError::Empty);
      }
      let mut value: i64 = 0;
      for c in digits.chars() {
          let d = c.to_digit(10).ok_or(IntError::InvalidDigit(c))? as i64;
          value = value.checked_mul(10).ok_or(IntError::Overflow)?;
          value = if negative { value.checked_sub(d) } else { value.checked_add(d) }.ok_or(IntError::Overflow)?;
      }
      Ok(value)
      """,
      ('"-17"', "Ok(-17)"), ('"12a"', "Err(IntError::InvalidDigit('a'))"), ('"42"', "Ok(42)"), ('"+8"', "Ok(8)"),
      ('""', "Err(IntError::Empty)"), ('"-"', "Err(IntError::Empty)"), ('" 1"', "Err(IntError::InvalidDigit(' '))"),
      ('"--1"', "Err(IntError::InvalidDigit('-'))"), ('"9223372036854775807"', "Ok(i64::MAX)"),
      ('"-9223372036854775808"', "Ok(i64::MIN)"), ('"9223372036854775808"', "Err(IntError::Overflow)"),
      ('"99999999999999999999x"', "Err(IntError::Overflow)"), ('"007"', "Ok(7)"),
      preamble=r"""
      #[derive(Debug, Clone, PartialEq, Eq)]
      pub enum IntError {
          Empty,
          InvalidDigit(char),
          Overflow,
      }
      """),
    T("split_fields", "text: &str, sep: char", "Vec<String>", EASY, "string split",
      r"""
      Splits `text` at every occurrence of `sep`, trims leading and trailing whitespace from each piece, and
      drops the pieces that are empty after trimming.
      """,
      r"""
      text.split(sep).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
      """,
      ("\"a, b,,c \", ','", 'vec!["a", "b", "c"]'), ("\"x|y z|\", '|'", 'vec!["x", "y z"]'),
      ("\"\", ','", "Vec::<String>::new()"),
      ("\" ; ;\", ';'", "Vec::<String>::new()"), ("\"one\", ','", 'vec!["one"]'), ("\"α·β\", '·'", 'vec!["α", "β"]')),
    T("title_case", "text: &str", "String", EASY, "string unicode",
      r"""
      Capitalises every word: its first character becomes upper case and the rest lower case. Words are
      separated by any whitespace; the result joins them with single spaces and has no leading or trailing
      space.
      """,
      r"""
      text.split_whitespace()
          .map(|word| {
              let mut chars = word.chars();
              match chars.next() {
                  Some(first) => first.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect(),
                  None => String::new(),
              }
          })
          .collect::<Vec<String>>()
          .join(" ")
      """,
      ('"hello WORLD"', '"Hello World"'), ('"  many   spaces "', '"Many Spaces"'), ('""', '""'),
      ('"élan vital"', '"Élan Vital"'),
      ('"x"', '"X"'), ('"3rd PLACE"', '"3rd Place"')),
    T("are_anagrams", "a: &str, b: &str", "bool", EASY, "string sorting",
      r"""
      Tells whether the two strings contain the same characters the same number of times, ignoring case and
      whitespace. Other characters (punctuation, digits) count as they are. Two empty strings are anagrams.
      """,
      r"""
      let key = |s: &str| {
          let mut chars: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).flat_map(char::to_lowercase).collect();
          chars.sort_unstable();
          chars
      };
      key(a) == key(b)
      """,
      ('"Listen", "Silent"', "true"), ('"abc", "abd"', "false"), ('"Dormitory", "dirty room"', "true"),
      ('"", ""', "true"),
      ('"aab", "abb"', "false"), ('"a!", "!A"', "true"), ('"Ça", "aç"', "true")),
    T("group_anagrams", "words: &[&str]", "Vec<Vec<String>>", MEDIUM, "string hashmap",
      r"""
      Groups the words that are anagrams of each other (the same characters with the same counts; case
      matters). Groups are ordered by the position of their first word in the input, and words inside a group
      keep their input order. Duplicate words stay in the output.
      """,
      r"""
      let mut index: HashMap<Vec<char>, usize> = HashMap::new();
      let mut groups: Vec<Vec<String>> = Vec::new();
      for &word in words {
          let mut key: Vec<char> = word.chars().collect();
          key.sort_unstable();
          let i = *index.entry(key).or_insert_with(|| {
              groups.push(Vec::new());
              groups.len() - 1
          });
          groups[i].push(word.to_string());
      }
      groups
      """,
      ('&["eat", "tea", "tan", "ate", "nat", "bat"]',
       'vec![vec!["eat", "tea", "ate"], vec!["tan", "nat"], vec!["bat"]]'),
      ('&["ab", "Ba", "ba", "ab"]', 'vec![vec!["ab", "ba", "ab"], vec!["Ba"]]'), ("&[]", "Vec::<Vec<String>>::new()"),
      ('&["a"]', 'vec![vec!["a"]]'), ('&["", ""]', 'vec![vec!["", ""]]'),
      preamble="use std::collections::HashMap;"),
    T("shared_prefix", "words: &[&str]", "String", EASY, "string",
      r"""
      Returns the longest prefix shared by all the words, compared character by character (a multi-byte
      character is never split). An empty list, or a list containing an empty word, gives an empty string.
      """,
      r"""
      let Some((first, rest)) = words.split_first() else {
          return String::new();
      };
      let mut prefix: Vec<char> = first.chars().collect();
      for word in rest {
          let common = prefix.iter().zip(word.chars()).take_while(|(a, b)| **a == *b).count();
          prefix.truncate(common);
      }
      prefix.into_iter().collect()
      """,
      ('&["flower", "flow", "flight"]', '"fl"'), ('&["dog", "racecar"]', '""'), ("&[]", '""'), ('&["solo"]', '"solo"'),
      ('&["été", "étage"]', '"ét"'), ('&["ab", ""]', '""')),
    T("count_overlapping", "text: &str, pattern: &str", "usize", MEDIUM, "string search",
      r"""
      Counts the occurrences of `pattern` in `text`, overlapping ones included (`"aa"` occurs 3 times in
      `"aaaa"`). An empty pattern counts 0. Works with non-ASCII text.
      """,
      r"""
      if pattern.is_empty() {
          return 0;
      }
      (0..text.len()).filter(|&i| text.is_char_boundary(i) && text[i..].starts_with(pattern)).count()
      """,
      ('"aaaa", "aa"', "3"), ('"banana", "ana"', "2"), ('"abc", ""', "0"), ('"", "a"', "0"), ('"ééé", "éé"', "2"),
      ('"abc", "abcd"', "0"), ('"abababa", "aba"', "3")),
    T("is_valid_identifier", "name: &str", "bool", EASY, "string",
      r"""
      Tells whether `name` is a valid ASCII identifier: it is non-empty, starts with an ASCII letter or `_`, and
      continues with ASCII letters, digits or `_`. A lone underscore `_` is not valid, but `__` is.
      """,
      r"""
      let mut chars = name.chars();
      match chars.next() {
          Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
          _ => return false,
      }
      name != "_" && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
      """,
      ('"snake_case"', "true"), ('"9lives"', "false"), ('"_private"', "true"), ('""', "false"), ('"_"', "false"),
      ('"has-dash"', "false"), ('"__"', "true"), ('"naïve"', "false"), ('"x1"', "true")),
    T("balanced_brackets", "text: &str", "bool", MEDIUM, "string stack",
      r"""
      Tells whether the brackets `()`, `[]` and `{}` in the text are balanced and properly nested. All other
      characters are ignored, so a text without brackets is balanced.
      """,
      r"""
      let mut stack = Vec::new();
      for c in text.chars() {
          match c {
              '(' | '[' | '{' => stack.push(c),
              ')' | ']' | '}' => {
                  let open = match c {
                      ')' => '(',
                      ']' => '[',
                      _ => '{',
                  };
                  if stack.pop() != Some(open) {
                      return false;
                  }
              }
              _ => {}
          }
      }
      stack.is_empty()
      """,
      ('"fn main() { let v = [1, 2]; }"', "true"), ('"([)]"', "false"), ('""', "true"), ('"(]"', "false"),
      ('"(("', "false"),
      ('"}{"', "false"), ('"a(b[c]{d}e)f"', "true")),
    T("longest_palindromic_substring", "text: &str", "String", HARD, "string search",
      r"""
      Returns the longest run of consecutive characters that reads the same forwards and backwards, comparing
      characters exactly (case matters). When several have the maximum length, returns the one that starts
      first. An empty input gives an empty string. Works on `char`s.
      """,
      r"""
      let chars: Vec<char> = text.chars().collect();
      let n = chars.len() as isize;
      let (mut best_start, mut best_len) = (0usize, 0usize);
      for center in 0..(2 * n - 1).max(0) {
          let (mut lo, mut hi) = (center / 2, center / 2 + center % 2);
          while lo >= 0 && hi < n && chars[lo as usize] == chars[hi as usize] {
              lo -= 1;
              hi += 1;
          }
          let len = (hi - lo - 1) as usize;
          if len > best_len {
              best_start = (lo + 1) as usize;
              best_len = len;
          }
      }
      chars[best_start..best_start + best_len].iter().collect()
      """,
      ('"babad"', '"bab"'), ('"cbbd"', '"bb"'), ('""', '""'), ('"a"', '"a"'), ('"abc"', '"a"'),
      ('"forgeeksskeegfor"', '"geeksskeeg"'), ('"Aba"', '"A"'), ('"xéyéx!"', '"xéyéx"')),
    T("kebab_to_camel", "text: &str", "String", EASY, "string case",
      r"""
      Converts a kebab-case name to lowerCamelCase. The pieces between hyphens are joined; the first non-empty
      piece is kept as it is, and every later piece has its first character upper-cased (the rest unchanged).
      Empty pieces, from leading, trailing or doubled hyphens, are skipped.
      """,
      r"""
      let mut out = String::new();
      for piece in text.split('-').filter(|p| !p.is_empty()) {
          if out.is_empty() {
              out.push_str(piece);
          } else {
              let mut chars = piece.chars();
              if let Some(first) = chars.next() {
                  out.extend(first.to_uppercase());
                  out.push_str(chars.as_str());
              }
          }
      }
      out
      """,
      ('"background-color"', '"backgroundColor"'), ('"-webkit--box-"', '"webkitBox"'), ('""', '""'),
      ('"single"', '"single"'),
      ('"a-b-c"', '"aBC"'), ('"x-élan"', '"xÉlan"'), ('"---"', '""')),
    T("parse_settings", "text: &str", "Option<BTreeMap<String, String>>", MEDIUM, "parsing btreemap option",
      r"""
      Parses settings written as `key=value` pairs separated by `;`. Keys and values are trimmed of
      surrounding whitespace, and only the first `=` in a pair separates key from value (the value may contain
      more `=` and may be empty). Pieces that are empty or only whitespace (a trailing `;`, say) are skipped,
      and a later duplicate key replaces the earlier value. Returns `None` if a piece has no `=` or an empty key.
      """,
      r"""
      let mut map = BTreeMap::new();
      for piece in text.split(';') {
          if piece.trim().is_empty() {
              continue;
          }
          let (key, value) = piece.split_once('=')?;
          let key = key.trim();
          if key.is_empty() {
              return None;
          }
          map.insert(key.to_string(), value.trim().to_string());
      }
      Some(map)
      """,
      ('"a=1; b = two ;"',
       'Some(BTreeMap::from([("a".to_string(), "1".to_string()), ("b".to_string(), "two".to_string())]))'),
      ('"a=1;b"', "None"), ('""', "Some(BTreeMap::new())"), ('"=5"', "None"),
      ('"k=v=w;k=2"', 'Some(BTreeMap::from([("k".to_string(), "2".to_string())]))'),
      ('"url=a=b"', 'Some(BTreeMap::from([("url".to_string(), "a=b".to_string())]))'),
      ('"x= ; ;"', 'Some(BTreeMap::from([("x".to_string(), String::new())]))'),
      preamble="use std::collections::BTreeMap;"),
    T("first_occurrences", "text: &str", "String", EASY, "string hashset",
      r"""
      Keeps only the first occurrence of each character, in the original order. Characters are compared
      exactly, so `a` and `A` are different.
      """,
      r"""
      let mut seen = HashSet::new();
      text.chars().filter(|&c| seen.insert(c)).collect()
      """,
      ('"mississippi"', '"misp"'), ('"aAaA"', '"aA"'), ('""', '""'), ('"hello world"', '"helo wrd"'), ('"ééa"', '"éa"'),
      preamble="use std::collections::HashSet;"),
    T("most_common_char", "text: &str", "Option<(char, usize)>", MEDIUM, "string hashmap option",
      r"""
      Returns the most frequent non-whitespace character together with its count. On a tie, the character
      that first appears earliest in the text wins. Returns `None` when the text has no non-whitespace
      characters.
      """,
      r"""
      let mut counts: HashMap<char, usize> = HashMap::new();
      let mut order = Vec::new();
      for c in text.chars().filter(|c| !c.is_whitespace()) {
          let n = counts.entry(c).or_insert(0);
          if *n == 0 {
              order.push(c);
          }
          *n += 1;
      }
      let mut best: Option<(char, usize)> = None;
      for c in order {
          let n = counts[&c];
          if best.map_or(true, |(_, m)| n > m) {
              best = Some((c, n));
          }
      }
      best
      """,
      ('"hello world"', "Some(('l', 3))"), ('"bbaa"', "Some(('b', 2))"), ('""', "None"), ('"   "', "None"),
      ('"abab"', "Some(('a', 2))"), ('"ééx"', "Some(('é', 2))"), ('"a b b"', "Some(('b', 2))"),
      preamble="use std::collections::HashMap;"),
    T("wrap_text", "text: &str, width: usize", "Vec<String>", HARD, "string greedy",
      r"""
      Greedily wraps the words of `text` into lines of at most `width` characters (counted as `char`s). Words
      are separated by any whitespace and joined on a line by single spaces; each line takes as many of the
      next words as fit. A word longer than `width` goes on a line of its own and is not broken. An empty or
      all-whitespace text gives no lines.
      """,
      r"""
      let mut lines: Vec<String> = Vec::new();
      let mut current = String::new();
      let mut current_len = 0;
      for word in text.split_whitespace() {
          let len = word.chars().count();
          if current_len > 0 && current_len + 1 + len > width {
              lines.push(std::mem::take(&mut current));
              current_len = 0;
          }
          if current_len > 0 {
              current.push(' ');
              current_len += 1;
          }
          current.push_str(word);
          current_len += len;
      }
      if current_len > 0 {
          lines.push(current);
      }
      lines
      """,
      ('"the quick brown fox jumps", 10', 'vec!["the quick", "brown fox", "jumps"]'),
      ('"extraordinary yes", 5', 'vec!["extraordinary", "yes"]'), ('"", 5', "Vec::<String>::new()"),
      ('"a b c", 3', 'vec!["a b", "c"]'), ('"héllo wörld", 11', 'vec!["héllo wörld"]'),
      ('"one two", 0', 'vec!["one", "two"]'),
      ('"  spaced \\n out  ", 20', 'vec!["spaced out"]'), ('"   ", 4', "Vec::<String>::new()")),
    T("levenshtein", "a: &str, b: &str", "usize", HARD, "string dp",
      r"""
      Returns the edit distance between two strings: the smallest number of single-character insertions,
      deletions and substitutions that turn `a` into `b`. Characters are compared as `char`s, case-sensitively.
      """,
      r"""
      let a: Vec<char> = a.chars().collect();
      let b: Vec<char> = b.chars().collect();
      let mut prev: Vec<usize> = (0..=b.len()).collect();
      for (i, ca) in a.iter().enumerate() {
          let mut row = vec![i + 1; b.len() + 1];
          for (j, cb) in b.iter().enumerate() {
              let cost = usize::from(ca != cb);
              row[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1);
          }
          prev = row;
      }
      prev[b.len()]
      """,
      ('"kitten", "sitting"', "3"), ('"flaw", "lawn"', "2"), ('"", ""', "0"), ('"", "abc"', "3"), ('"abc", ""', "3"),
      ('"same", "same"', "0"), ('"café", "cafe"', "1"), ('"Rust", "rust"', "1")),
    T("is_subsequence_of", "needle: &str, haystack: &str", "bool", EASY, "string iter",
      r"""
      Tells whether the characters of `needle` appear in `haystack` in the same order, though not necessarily
      next to each other. The empty string is a subsequence of every string.
      """,
      r"""
      let mut rest = haystack.chars();
      needle.chars().all(|c| rest.any(|h| h == c))
      """,
      ('"ace", "abcde"', "true"), ('"aec", "abcde"', "false"), ('"", ""', "true"), ('"", "x"', "true"),
      ('"a", ""', "false"),
      ('"éa", "béta"', "true"), ('"aa", "a"', "false")),
    T("common_subsequence_len", "a: &str, b: &str", "usize", HARD, "string dp",
      r"""
      Returns the length of the longest common subsequence of the two strings: the longest sequence of
      characters that appears in both in the same order, not necessarily contiguously. Compares `char`s.
      """,
      r"""
      let a: Vec<char> = a.chars().collect();
      let b: Vec<char> = b.chars().collect();
      let mut prev = vec![0usize; b.len() + 1];
      for ca in &a {
          let mut row = vec![0usize; b.len() + 1];
          for (j, cb) in b.iter().enumerate() {
              row[j + 1] = if ca == cb { prev[j] + 1 } else { prev[j + 1].max(row[j]) };
          }
          prev = row;
      }
      prev[b.len()]
      """,
      ('"abcde", "ace"', "3"), ('"abc", "def"', "0"), ('"", "abc"', "0"), ('"AGGTAB", "GXTXAYB"', "4"),
      ('"aaaa", "aa"', "2"),
      ('"日本語", "本語日"', "2")),
    T("longest_distinct_substring", "text: &str", "usize", MEDIUM, "string window hashmap",
      r"""
      Returns the length, in characters, of the longest run of consecutive characters in which no character
      repeats. An empty text gives 0.
      """,
      r"""
      let mut last: HashMap<char, usize> = HashMap::new();
      let (mut start, mut best) = (0, 0);
      for (i, c) in text.chars().enumerate() {
          if let Some(&j) = last.get(&c) {
              start = start.max(j + 1);
          }
          last.insert(c, i);
          best = best.max(i + 1 - start);
      }
      best
      """,
      ('"abcabcbb"', "3"), ('"bbbbb"', "1"), ('""', "0"), ('"pwwkew"', "3"), ('"abba"', "2"), ('"日本日本語"', "3"),
      ('"au"', "2"),
      preamble="use std::collections::HashMap;"),
    T("longest_balanced_run", "text: &str", "usize", HARD, "string stack",
      r"""
      `text` consists only of `(` and `)`. Returns the length of the longest run of consecutive characters
      that forms a well-formed sequence of parentheses (every `(` closed by a later matching `)`, properly
      nested). An empty text gives 0.
      """,
      r"""
      let mut stack: Vec<isize> = vec![-1];
      let mut best = 0;
      for (i, c) in text.chars().enumerate() {
          let i = i as isize;
          if c == '(' {
              stack.push(i);
          } else {
              stack.pop();
              match stack.last() {
                  Some(&top) => best = best.max((i - top) as usize),
                  None => stack.push(i),
              }
          }
      }
      best
      """,
      ('"(()"', "2"), ('")()())"', "4"), ('""', "0"), ('"(((("', "0"), ('"()(())"', "6"), ('"())(())"', "4"),
      ('")("', "0")),
    T("glob_matches", "pattern: &str, text: &str", "bool", HARD, "string dp",
      r"""
      Tells whether the whole of `text` matches the wildcard `pattern`: `?` matches exactly one character, `*`
      matches any sequence of characters (including none), and every other character matches only itself.
      Matching works on `char`s, not bytes.
      """,
      r"""
      let t: Vec<char> = text.chars().collect();
      let mut dp = vec![false; t.len() + 1];
      dp[0] = true;
      for pc in pattern.chars() {
          let mut next = vec![false; t.len() + 1];
          if pc == '*' {
              next[0] = dp[0];
              for j in 1..=t.len() {
                  next[j] = dp[j] || next[j - 1];
              }
          } else {
              for j in 1..=t.len() {
                  next[j] = dp[j - 1] && (pc == '?' || pc == t[j - 1]);
              }
          }
          dp = next;
      }
      dp[t.len()]
      """,
      ('"a*b?d", "axxbcd"', "true"), ('"a*", "ba"', "false"), ('"*", ""', "true"), ('"", ""', "true"),
      ('"", "a"', "false"),
      ('"?", ""', "false"), ('"*.rs", "main.rs"', "true"), ('"??", "éx"', "true"), ('"a*a*a", "aaaa"', "true"),
      ('"a*a*a", "aa"', "false")),
    T("mask_all_but_last_four", "text: &str", "String", EASY, "string unicode",
      r"""
      Replaces every character except the last four with `#`. Text of four or fewer characters is returned
      unchanged. Characters, not bytes, are counted.
      """,
      r"""
      let count = text.chars().count();
      text.chars().enumerate().map(|(i, c)| if i + 4 < count { '#' } else { c }).collect()
      """,
      ('"4556364607935616"', '"############5616"'), ('"1234"', '"1234"'), ('""', '""'), ('"a b cd"', '"##b cd"'),
      ('"ééééé"', '"#éééé"')),
    # ---------------------------------------------------------------- parsing, Option and Result
    T("checked_div_rem", "a: i32, b: i32", "Option<(i32, i32)>", EASY, "math option overflow",
      r"""
      Returns the quotient and remainder of `a` divided by `b`, both truncating toward zero like Rust's `/` and
      `%` (so the remainder has the sign of `a`). Returns `None` when `b` is 0 or the division overflows
      (`i32::MIN / -1`).
      """,
      r"""
      Some((a.checked_div(b)?, a.checked_rem(b)?))
      """,
      ("7, 2", "Some((3, 1))"), ("-7, 2", "Some((-3, -1))"), ("7, 0", "None"), ("i32::MIN, -1", "None"),
      ("0, 5", "Some((0, 0))"),
      ("i32::MIN, 1", "Some((i32::MIN, 0))"), ("7, -2", "Some((-3, 1))")),
    T("parse_hex_color", "text: &str", "Option<(u8, u8, u8)>", MEDIUM, "parsing option",
      r"""
      Parses a CSS-style hex colour into `(red, green, blue)`. Accepts `#` followed by exactly six hex digits
      (`#ff8000`) or exactly three (`#f80`, where each digit is doubled, giving `ff8800`), in either case.
      Anything else, including a missing `#` or surrounding whitespace, gives `None`.
      """,
      r"""
      let hex = text.strip_prefix('#')?;
      if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
          return None;
      }
      let digits: Vec<u8> = hex.chars().map(|c| c.to_digit(16).unwrap() as u8).collect();
      match digits[..] {
          [r, g, b] => Some((r * 17, g * 17, b * 17)),
          [r1, r2, g1, g2, b1, b2] => Some((r1 * 16 + r2, g1 * 16 + g2, b1 * 16 + b2)),
          _ => None,
      }
      """,
      ('"#ff8000"', "Some((255, 128, 0))"), ('"#F80"', "Some((255, 136, 0))"), ('"ff8000"', "None"),
      ('"#12345"', "None"),
      ('"#gg0000"', "None"), ('"#000"', "Some((0, 0, 0))"), ('"#AbCdEf"', "Some((171, 205, 239))"), ('" #fff"', "None"),
      ('"#"', "None")),
    T("parse_semver", "text: &str", "Option<(u32, u32, u32)>", EASY, "parsing option",
      r"""
      Parses a version of the form `MAJOR.MINOR.PATCH`, optionally preceded by a lower-case `v`. Each part is
      one or more ASCII digits (leading zeros allowed) whose value fits in a `u32`. Anything else (missing or
      extra parts, signs, spaces, an upper-case `V`) gives `None`.
      """,
      r"""
      let text = text.strip_prefix('v').unwrap_or(text);
      let parts: Vec<&str> = text.split('.').collect();
      if parts.len() != 3 {
          return None;
      }
      let mut numbers = [0u32; 3];
      for (slot, part) in numbers.iter_mut().zip(parts) {
          if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
              return None;
          }
          *slot = part.parse().ok()?;
      }
      Some((numbers[0], numbers[1], numbers[2]))
      """,
      ('"1.2.3"', "Some((1, 2, 3))"), ('"1.2"', "None"), ('"v10.0.7"', "Some((10, 0, 7))"), ('"1.2.3.4"', "None"),
      ('"1.+2.3"', "None"), ('"1..3"', "None"), ('"V1.2.3"', "None"), ('"4294967296.0.0"', "None"),
      ('"01.2.3"', "Some((1, 2, 3))")),
    T("compare_versions", "a: &str, b: &str", "Option<Ordering>", MEDIUM, "parsing option sorting",
      r"""
      Compares two dotted version strings such as `"1.10.2"`. Parts are compared numerically from left to right
      and a missing part counts as 0, so `"1.0"` equals `"1"` and `"1.10"` is greater than `"1.9"`. Returns
      `None` if either string has a part that is not a non-empty run of ASCII digits fitting in a `u64`
      (an empty string counts as one empty part).
      """,
      r"""
      fn parts(text: &str) -> Option<Vec<u64>> {
          text.split('.')
              .map(|p| if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) { p.parse().ok() } else { None })
              .collect()
      }
      let (a, b) = (parts(a)?, parts(b)?);
      for i in 0..a.len().max(b.len()) {
          let (x, y) = (a.get(i).copied().unwrap_or(0), b.get(i).copied().unwrap_or(0));
          if x != y {
              return Some(x.cmp(&y));
          }
      }
      Some(Ordering::Equal)
      """,
      ('"1.10", "1.9"', "Some(Ordering::Greater)"), ('"1.0", "1"', "Some(Ordering::Equal)"),
      ('"2.0.1", "2.1"', "Some(Ordering::Less)"),
      ('"", "1"', "None"), ('"1.a", "1"', "None"), ('"1..2", "1.2"', "None"), ('"0.0.0", "0"', "Some(Ordering::Equal)"),
      ('"3", "3.0.0.1"', "Some(Ordering::Less)"),
      preamble="use std::cmp::Ordering;"),
    T("sum_numbers", "items: &[&str]", "Result<i64, usize>", MEDIUM, "parsing result overflow",
      r"""
      Parses every item as an `i64` (after trimming surrounding whitespace; a leading `+` or `-` is allowed) and
      returns the sum. If an item does not parse, returns `Err` with the index of the first such item; if adding
      an item makes the running sum overflow, returns `Err` with that item's index. Items are processed in
      order and the first problem wins. An empty slice sums to `Ok(0)`.
      """,
      r"""
      let mut total: i64 = 0;
      for (i, item) in items.iter().enumerate() {
          let value: i64 = item.trim().parse().map_err(|_| i)?;
          total = total.checked_add(value).ok_or(i)?;
      }
      Ok(total)
      """,
      ('&["1", " 2 ", "-3"]', "Ok(0)"), ('&["4", "x", ""]', "Err(1)"), ("&[]", "Ok(0)"), ('&["", "5"]', "Err(0)"),
      ('&["9223372036854775807", "1", "y"]', "Err(1)"), ('&["+7"]', "Ok(7)"), ('&["10", "20"]', "Ok(30)")),
    T("first_repeated", "values: &[i32]", "Option<i32>", EASY, "slice hashset option",
      r"""
      Scans the values from left to right and returns the first value that has already been seen before (the
      value whose second occurrence comes earliest), or `None` if all the values are distinct.
      """,
      r"""
      let mut seen = HashSet::new();
      values.iter().copied().find(|&v| !seen.insert(v))
      """,
      ("&[2, 5, 1, 5, 2]", "Some(5)"), ("&[1, 2, 3]", "None"), ("&[]", "None"), ("&[7, 7]", "Some(7)"),
      ("&[3, 1, 2, 1, 3]", "Some(1)"),
      ("&[-1, 0, -1]", "Some(-1)"),
      preamble="use std::collections::HashSet;"),
    T("parse_ipv4", "text: &str", "Option<[u8; 4]>", MEDIUM, "parsing option",
      r"""
      Parses a dotted IPv4 address into its four octets. There must be exactly four parts separated by `.`,
      each made of 1 to 3 ASCII digits with a value of at most 255 and without leading zeros (`0` is fine,
      `01` is not). Anything else, including signs and whitespace, gives `None`.
      """,
      r"""
      let parts: Vec<&str> = text.split('.').collect();
      if parts.len() != 4 {
          return None;
      }
      let mut octets = [0u8; 4];
      for (slot, part) in octets.iter_mut().zip(parts) {
          if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
              return None;
          }
          if part.len() > 1 && part.starts_with('0') {
              return None;
          }
          *slot = part.parse().ok()?;
      }
      Some(octets)
      """,
      ('"192.168.0.1"', "Some([192, 168, 0, 1])"), ('"256.1.1.1"', "None"), ('"255.255.255.255"', "Some([255; 4])"),
      ('"1.2.3"', "None"), ('"1.2.3.4.5"', "None"), ('"01.2.3.4"', "None"), ('"1.2.3.-4"', "None"), ('""', "None"),
      ('"0.0.0.0"', "Some([0, 0, 0, 0])"), ('"1.2.3.4 "', "None")),
    T("quadratic_roots", "a: f64, b: f64, c: f64", "Option<(f64, f64)>", MEDIUM, "math float option",
      r"""
      Returns the real roots of `a*x^2 + b*x + c = 0` as `(smaller, larger)`; a repeated root is returned
      twice. Returns `None` when `a` is 0 or there is no real root (negative discriminant).
      """,
      r"""
      if a == 0.0 {
          return None;
      }
      let disc = b * b - 4.0 * a * c;
      if disc < 0.0 {
          return None;
      }
      let s = disc.sqrt();
      let (r1, r2) = ((-b - s) / (2.0 * a), (-b + s) / (2.0 * a));
      Some((r1.min(r2), r1.max(r2)))
      """,
      "let close = |r: Option<(f64, f64)>, lo: f64, hi: f64| {\n"
      "    r.map_or(false, |(x, y)| (x - lo).abs() < 1e-9 && (y - hi).abs() < 1e-9)\n"
      "};",
      "assert!(close(quadratic_roots(1.0, -3.0, 2.0), 1.0, 2.0));", "assert_eq!(quadratic_roots(1.0, 0.0, 1.0), None);",
      "assert_eq!(quadratic_roots(0.0, 2.0, 1.0), None);",
      "assert!(close(quadratic_roots(1.0, 2.0, 1.0), -1.0, -1.0));",
      "assert!(close(quadratic_roots(-2.0, 0.0, 8.0), -2.0, 2.0));",
      "assert!(close(quadratic_roots(1.0, 0.0, -2.0), -2f64.sqrt(), 2f64.sqrt()));",
      examples=("assert_eq!(quadratic_roots(1.0, -3.0, 2.0), Some((1.0, 2.0)));",
                "assert_eq!(quadratic_roots(1.0, 0.0, 1.0), None);")),
    T("parse_duration", "text: &str", "Option<u64>", HARD, "parsing option overflow",
      r"""
      Parses a duration such as `"1h30m15s"` into seconds. The text is one or more parts, each a non-empty run
      of ASCII digits followed by a unit: `h` (hours), `m` (minutes) or `s` (seconds). Each unit may appear at
      most once, and units must come in the order h, m, s (any of them may be left out). No spaces or other
      characters are allowed. Returns `None` for an empty or malformed text, or when a number or the total
      does not fit in a `u64`.
      """,
      r"""
      let mut total: u64 = 0;
      let mut number = String::new();
      let mut last_rank = 0;
      for c in text.chars() {
          if c.is_ascii_digit() {
              number.push(c);
              continue;
          }
          let (rank, factor) = match c {
              'h' => (1, 3600),
              'm' => (2, 60),
              's' => (3, 1),
              _ => return None,
          };
          if number.is_empty() || rank <= last_rank {
              return None;
          }
          let value: u64 = number.parse().ok()?;
          total = total.checked_add(value.checked_mul(factor)?)?;
          last_rank = rank;
          number.clear();
      }
      if last_rank == 0 || !number.is_empty() {
          return None;
      }
      Some(total)
      """,
      ('"1h30m15s"', "Some(5415)"), ('"5m1h"', "None"), ('"45s"', "Some(45)"), ('"2h"', "Some(7200)"),
      ('"90m"', "Some(5400)"),
      ('"0s"', "Some(0)"), ('""', "None"), ('"10"', "None"), ('"1h1h"', "None"), ('"h"', "None"), ('"1h 2m"', "None"),
      ('"1d"', "None"), ('"99999999999999999999s"', "None"), ('"5124095576030431h"', "Some(18446744073709551600)"),
      ('"5124095576030431h16s"', "None")),
    T("parse_csv_line", "line: &str", "Option<Vec<String>>", HARD, "parsing string option",
      r"""
      Splits one line of CSV into fields separated by commas. A field that starts with a double quote is
      quoted: it runs to the matching closing quote, may contain commas, and a doubled quote `""` inside it
      stands for one `"`; the closing quote must be followed by a comma or the end of the line. Unquoted fields
      are taken literally (no trimming; a quote inside them is an ordinary character). An empty line is one
      empty field, and a trailing comma adds an empty last field. Returns `None` if a quoted field is never
      closed or its closing quote is followed by anything but a comma.
      """,
      r"""
      let chars: Vec<char> = line.chars().collect();
      let mut fields = Vec::new();
      let mut i = 0;
      loop {
          let mut field = String::new();
          if chars.get(i) == Some(&'"') {
              i += 1;
              loop {
                  match chars.get(i) {
                      None => return None,
                      Some('"') if chars.get(i + 1) == Some(&'"') => {
                          field.push('"');
                          i += 2;
                      }
                      Some('"') => {
                          i += 1;
                          break;
                      }
                      Some(&c) => {
                          field.push(c);
                          i += 1;
                      }
                  }
              }
              if i < chars.len() && chars[i] != ',' {
                  return None;
              }
          } else {
              while i < chars.len() && chars[i] != ',' {
                  field.push(chars[i]);
                  i += 1;
              }
          }
          fields.push(field);
          if i >= chars.len() {
              return Some(fields);
          }
          i += 1;
      }
      """,
      (r'"a,\"b,c\",d"', 'Some(vec!["a".to_string(), "b,c".to_string(), "d".to_string()])'),
      ('""', "Some(vec![String::new()])"),
      r'assert_eq!(parse_csv_line(r#""say ""hi""",x"#).unwrap(), vec!["say \"hi\"", "x"]);',
      'assert_eq!(parse_csv_line("a,,").unwrap(), vec!["a", "", ""]);',
      r'assert_eq!(parse_csv_line("\"open,x"), None);',
      r'assert_eq!(parse_csv_line("\"ab\"c,d"), None);',
      r'assert_eq!(parse_csv_line("x\"y,z").unwrap(), vec!["x\"y", "z"]);',
      'assert_eq!(parse_csv_line(" a , b").unwrap(), vec![" a ", " b"]);',
      r'assert_eq!(parse_csv_line("\"\",é").unwrap(), vec!["", "é"]);'),
    T("eval_rpn", "expr: &str", "Result<i64, RpnError>", HARD, "parsing stack result enum",
      r"""
      Evaluates an expression in reverse Polish notation. Tokens are separated by whitespace. A token that
      `str::parse::<i64>` accepts is a number (so `-3` is a number); otherwise it must be one of the binary
      operators `+`, `-`, `*`, `/` (division truncating toward zero) or `%` (remainder with the sign of the
      dividend), which pop the right operand and then the left one and push the result. Tokens are processed
      left to right and the first error wins: `BadToken` for any other token, `StackUnderflow` when an
      operator finds fewer than two values, `DivideByZero` for `/` or `%` by zero, `Overflow` when a result does
      not fit in an `i64`, and `Unbalanced` when the expression does not leave exactly one value (an empty
      expression included).
      """,
      r"""
      let mut stack: Vec<i64> = Vec::new();
      for token in expr.split_whitespace() {
          if let Ok(n) = token.parse::<i64>() {
              stack.push(n);
              continue;
          }
          if !matches!(token, "+" | "-" | "*" | "/" | "%") {
              return Err(RpnError::BadToken(token.to_string()));
          }
          let (Some(b), Some(a)) = (stack.pop(), stack.pop()) else {
              return Err(RpnError::StackUnderflow);
          };
          let value = match token {
              "+" => a.checked_add(b),
              "-" => a.checked_sub(b),
              "*" => a.checked_mul(b),
              _ if b == 0 => return Err(RpnError::DivideByZero),
              "/" => a.checked_div(b),
              _ => a.checked_rem(b),
          };
          stack.push(value.ok_or(RpnError::Overflow)?);
      }
      match stack[..] {
          [only] => Ok(only),
          _ => Err(RpnError::Unbalanced),
      }
      """,
      ('"3 4 + 2 *"', "Ok(14)"), ('"1 0 /"', "Err(RpnError::DivideByZero)"), ('"5 1 2 + 4 * + 3 -"', "Ok(14)"),
      ('"7 -2 /"', "Ok(-3)"),
      ('"-7 2 %"', "Ok(-1)"), ('""', "Err(RpnError::Unbalanced)"), ('"1 2"', "Err(RpnError::Unbalanced)"),
      ('"+"', "Err(RpnError::StackUnderflow)"), ('"1 +"', "Err(RpnError::StackUnderflow)"),
      ('"2 x +"', 'Err(RpnError::BadToken("x".to_string()))'), ('"9223372036854775807 1 +"', "Err(RpnError::Overflow)"),
      ('"-9223372036854775808 -1 /"', "Err(RpnError::Overflow)"), ('"1 + 2"', "Err(RpnError::StackUnderflow)"),
      preamble=r"""
      #[derive(Debug, Clone, PartialEq, Eq)]
      pub enum RpnError {
          StackUnderflow,
          DivideByZero,
          Overflow,
          BadToken(String),
          Unbalanced,
      }
      """),
    T("eval_arithmetic", "text: &str", "Option<i64>", HARD, "parsing recursion option",
      r"""
      Evaluates an arithmetic expression over non-negative decimal integers with `+`, `-`, `*`, `/` and
      parentheses. `*` and `/` bind tighter than `+` and `-`, operators of equal precedence associate to the
      left, and `/` truncates toward zero. A unary minus may stand before a number or a parenthesised group
      (`-(2 + 3)`, `2 * -3`). Whitespace between tokens is ignored. Returns `None` for malformed input (an empty
      text included), division by zero, or any intermediate result that overflows `i64`.
      """,
      r"""
      fn skip(s: &[u8], i: &mut usize) {
          while *i < s.len() && s[*i].is_ascii_whitespace() {
              *i += 1;
          }
      }
      fn sum(s: &[u8], i: &mut usize) -> Option<i64> {
          let mut value = product(s, i)?;
          loop {
              skip(s, i);
              match s.get(*i) {
                  Some(b'+') => {
                      *i += 1;
                      value = value.checked_add(product(s, i)?)?;
                  }
                  Some(b'-') => {
                      *i += 1;
                      value = value.checked_sub(product(s, i)?)?;
                  }
                  _ => return Some(value),
              }
          }
      }
      fn product(s: &[u8], i: &mut usize) -> Option<i64> {
          let mut value = atom(s, i)?;
          loop {
              skip(s, i);
              match s.get(*i) {
                  Some(b'*') => {
                      *i += 1;
                      value = value.checked_mul(atom(s, i)?)?;
                  }
                  Some(b'/') => {
                      *i += 1;
                      value = value.checked_div(atom(s, i)?)?;
                  }
                  _ => return Some(value),
              }
          }
      }
      fn atom(s: &[u8], i: &mut usize) -> Option<i64> {
          skip(s, i);
          match *s.get(*i)? {
              b'-' => {
                  *i += 1;
                  atom(s, i)?.checked_neg()
              }
              b'(' => {
                  *i += 1;
                  let value = sum(s, i)?;
                  skip(s, i);
                  if s.get(*i) != Some(&b')') {
                      return None;
                  }
                  *i += 1;
                  Some(value)
              }
              b'0'..=b'9' => {
                  let mut value: i64 = 0;
                  while let Some(&d @ b'0'..=b'9') = s.get(*i) {
                      value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
                      *i += 1;
                  }
                  Some(value)
              }
              _ => None,
          }
      }
      let s = text.as_bytes();
      let mut i = 0;
      let value = sum(s, &mut i)?;
      skip(s, &mut i);
      if i == s.len() { Some(value) } else { None }
      """,
      ('"1 + 2 * 3"', "Some(7)"), ('"(1 + 2) * 3"', "Some(9)"), ('""', "None"), ('"10 / 3"', "Some(3)"),
      ('"-7 / 2"', "Some(-3)"),
      ('"2 * -(3 + 4)"', "Some(-14)"), ('"8 - 3 - 2"', "Some(3)"), ('"16 / 4 / 2"', "Some(2)"), ('"1 / 0"', "None"),
      ('"(1 + 2"', "None"), ('"1 + "', "None"), ('"3 4"', "None"), ('"9223372036854775807 + 1"', "None"),
      ('"  42  "', "Some(42)"), ('"2 ^ 3"', "None"), ('"((5))"', "Some(5)")),
    T("base64_encode", "bytes: &[u8]", "String", MEDIUM, "encoding bits",
      r"""
      Encodes bytes as Base64 with the standard alphabet (`A`-`Z`, `a`-`z`, `0`-`9`, `+`, `/`), padding the
      output with `=` to a multiple of four characters. Empty input gives an empty string.
      """,
      r"""
      const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
      let mut out = String::with_capacity((bytes.len() + 2) / 3 * 4);
      for chunk in bytes.chunks(3) {
          let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
          let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
          for k in 0..4 {
              if k <= chunk.len() {
                  out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
              } else {
                  out.push('=');
              }
          }
      }
      out
      """,
      ('b"Man"', '"TWFu"'), ('b"M"', '"TQ=="'), ('b""', '""'), ('b"Ma"', '"TWE="'),
      ('b"hello world"', '"aGVsbG8gd29ybGQ="'),
      ("&[255, 254, 253]", '"//79"'), ("&[0, 0, 0, 0]", '"AAAAAA=="')),
    T("hex_decode", "text: &str", "Option<Vec<u8>>", EASY, "encoding parsing option",
      r"""
      Decodes a string of hexadecimal digit pairs into bytes, each pair giving one byte (`"0aFF"` gives
      `[10, 255]`); digits may be in either case. Returns `None` for an odd number of digits or any character
      that is not a hex digit. An empty string gives an empty vector.
      """,
      r"""
      if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
          return None;
      }
      text.as_bytes()
          .chunks(2)
          .map(|pair| Some((char::from(pair[0]).to_digit(16)? * 16 + char::from(pair[1]).to_digit(16)?) as u8))
          .collect()
      """,
      ('"0aFF"', "Some(vec![10, 255])"), ('"abc"', "None"), ('""', "Some(vec![])"), ('"zz"', "None"), ('"é0"', "None"),
      ('"DEADbeef"', "Some(vec![0xde, 0xad, 0xbe, 0xef])"), ('"+1"', "None")),
    T("sum_if_all_present", "values: &[Option<i32>]", "Option<i32>", EASY, "option iter overflow",
      r"""
      Adds up the values if every one of them is `Some`. Returns `None` if any value is `None` or if the sum
      overflows `i32` at any point (adding left to right). An empty slice sums to `Some(0)`.
      """,
      r"""
      values.iter().try_fold(0i32, |acc, v| acc.checked_add((*v)?))
      """,
      ("&[Some(1), Some(2)]", "Some(3)"), ("&[Some(1), None]", "None"), ("&[]", "Some(0)"),
      ("&[Some(i32::MAX), Some(1)]", "None"),
      ("&[Some(-4)]", "Some(-4)"), ("&[None]", "None")),
    # ---------------------------------------------------------------- maps, sets and sorting
    T("group_by_char_count", "words: &[&str]", "BTreeMap<usize, Vec<String>>", EASY, "btreemap string",
      r"""
      Groups the words by their length in characters (not bytes). Each group keeps the words in input order,
      duplicates included.
      """,
      r"""
      let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
      for word in words {
          groups.entry(word.chars().count()).or_default().push(word.to_string());
      }
      groups
      """,
      ('&["hi", "yes", "no", "été", "a"]',
       'BTreeMap::from([(1, vec!["a".to_string()]), (2, vec!["hi".to_string(), "no".to_string()]), '
       '(3, vec!["yes".to_string(), "été".to_string()])])'),
      ("&[]", "BTreeMap::new()"), 'assert_eq!(group_by_char_count(&["", "x", ""])[&0], vec!["", ""]);',
      'assert_eq!(group_by_char_count(&["ab", "ab"]).len(), 1);',
      preamble="use std::collections::BTreeMap;"),
    T("first_unique_position", "text: &str", "Option<usize>", EASY, "string hashmap option",
      r"""
      Returns the position, counted in characters (not bytes), of the first character that occurs exactly once
      in the text, or `None` if every character repeats. Case matters.
      """,
      r"""
      let mut counts: HashMap<char, usize> = HashMap::new();
      for c in text.chars() {
          *counts.entry(c).or_insert(0) += 1;
      }
      text.chars().position(|c| counts[&c] == 1)
      """,
      ('"loveleetcode"', "Some(2)"), ('"aabb"', "None"), ('"leetcode"', "Some(0)"), ('""', "None"),
      ('"ééx"', "Some(2)"),
      ('"aA"', "Some(0)"),
      preamble="use std::collections::HashMap;"),
    T("invert_scores", "scores: &BTreeMap<String, u32>", "BTreeMap<u32, Vec<String>>", EASY, "btreemap",
      r"""
      Inverts a map from names to scores: each score maps to the names that have it, sorted alphabetically.
      """,
      r"""
      let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
      for (name, &score) in scores {
          out.entry(score).or_default().push(name.clone());
      }
      out
      """,
      ('&BTreeMap::from([("bob".to_string(), 5), ("ann".to_string(), 3), ("cid".to_string(), 3)])',
       'BTreeMap::from([(3, vec!["ann".to_string(), "cid".to_string()]), (5, vec!["bob".to_string()])])'),
      ("&BTreeMap::new()", "BTreeMap::new()"),
      'let m = BTreeMap::from([("z".to_string(), 1), ("a".to_string(), 1)]);',
      'assert_eq!(invert_scores(&m)[&1], vec!["a", "z"]);', "assert_eq!(invert_scores(&m).len(), 1);",
      preamble="use std::collections::BTreeMap;"),
    T("values_in_all", "lists: &[Vec<i32>]", "Vec<i32>", MEDIUM, "hashset btreeset",
      r"""
      Returns the distinct values that appear in every one of the lists, in ascending order. With no lists at
      all the result is empty.
      """,
      r"""
      let Some((first, rest)) = lists.split_first() else {
          return Vec::new();
      };
      let mut common: BTreeSet<i32> = first.iter().copied().collect();
      for list in rest {
          let set: HashSet<i32> = list.iter().copied().collect();
          common.retain(|v| set.contains(v));
      }
      common.into_iter().collect()
      """,
      ("&[vec![3, 1, 2, 2], vec![2, 3, 4], vec![5, 3, 2]]", "vec![2, 3]"), ("&[vec![1], vec![]]", "Vec::<i32>::new()"),
      ("&[]", "Vec::<i32>::new()"), ("&[vec![1, 1]]", "vec![1]"), ("&[vec![0, -1], vec![-1, 0]]", "vec![-1, 0]"),
      preamble="use std::collections::{BTreeSet, HashSet};"),
    T("count_pairs_with_difference", "values: &[i32], k: u32", "usize", MEDIUM, "hashmap",
      r"""
      Counts the distinct pairs of values `(x, y)` from the slice with `y - x == k` (computed without overflow).
      Pairs are counted by value, so repeated values do not add extra pairs; for `k == 0` this counts the
      values that occur at least twice.
      """,
      r"""
      let mut counts: HashMap<i64, usize> = HashMap::new();
      for &v in values {
          *counts.entry(i64::from(v)).or_insert(0) += 1;
      }
      counts
          .iter()
          .filter(|&(&v, &n)| if k == 0 { n >= 2 } else { counts.contains_key(&(v + i64::from(k))) })
          .count()
      """,
      ("&[3, 1, 4, 1, 5], 2", "2"), ("&[1, 3, 1, 5, 4], 0", "1"), ("&[1, 2, 3, 4, 5], 1", "4"), ("&[], 1", "0"),
      ("&[1, 1, 1], 0", "1"), ("&[5], 0", "0"), ("&[i32::MIN, i32::MAX], u32::MAX", "1"),
      preamble="use std::collections::HashMap;"),
    T("matches_word_pattern", "pattern: &str, text: &str", "bool", MEDIUM, "hashmap string",
      r"""
      Tells whether the words of `text` (split on whitespace) follow `pattern`, one pattern character per word,
      with a one-to-one correspondence: the same character always stands for the same word and different
      characters stand for different words. The number of words must equal the number of characters.
      """,
      r"""
      let words: Vec<&str> = text.split_whitespace().collect();
      let letters: Vec<char> = pattern.chars().collect();
      if words.len() != letters.len() {
          return false;
      }
      let mut forward: HashMap<char, &str> = HashMap::new();
      let mut backward: HashMap<&str, char> = HashMap::new();
      for (&c, &w) in letters.iter().zip(&words) {
          if *forward.entry(c).or_insert(w) != w || *backward.entry(w).or_insert(c) != c {
              return false;
          }
      }
      true
      """,
      ('"abba", "dog cat cat dog"', "true"), ('"abba", "dog cat cat fish"', "false"),
      ('"aaaa", "dog cat cat dog"', "false"),
      ('"abba", "dog dog dog dog"', "false"), ('"", ""', "true"), ('"ab", "one"', "false"), ('"éé", "x  x"', "true"),
      preamble="use std::collections::HashMap;"),
    T("most_frequent_values", "values: &[i32]", "Vec<i32>", EASY, "btreemap",
      r"""
      Returns every value that occurs the maximum number of times, in ascending order. An empty slice gives an
      empty vector.
      """,
      r"""
      let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
      for &v in values {
          *counts.entry(v).or_insert(0) += 1;
      }
      let top = counts.values().copied().max().unwrap_or(0);
      counts.into_iter().filter(|&(_, n)| n == top).map(|(v, _)| v).collect()
      """,
      ("&[1, 2, 2, 3, 3]", "vec![2, 3]"), ("&[5]", "vec![5]"), ("&[]", "Vec::<i32>::new()"),
      ("&[4, -1, 4, -1, 0]", "vec![-1, 4]"),
      ("&[1, 2, 3]", "vec![1, 2, 3]"),
      preamble="use std::collections::BTreeMap;"),
    T("merge_stock", "a: &[(&str, u32)], b: &[(&str, u32)]", "BTreeMap<String, u64>", EASY, "btreemap",
      r"""
      Combines two stock lists of `(item, quantity)` pairs into one map from item to total quantity. An item
      may appear several times, in either list, and all its quantities are added (as `u64`, so totals do not
      overflow). Items listed only with quantity 0 still appear in the map.
      """,
      r"""
      let mut totals: BTreeMap<String, u64> = BTreeMap::new();
      for &(item, quantity) in a.iter().chain(b) {
          *totals.entry(item.to_string()).or_insert(0) += u64::from(quantity);
      }
      totals
      """,
      ('&[("apple", 3), ("pear", 1)], &[("apple", 2), ("fig", 0)]',
       'BTreeMap::from([("apple".to_string(), 5), ("fig".to_string(), 0), ("pear".to_string(), 1)])'),
      ("&[], &[]", "BTreeMap::new()"), ('&[("x", 1), ("x", 2)], &[]', 'BTreeMap::from([("x".to_string(), 3)])'),
      ('&[("x", u32::MAX)], &[("x", u32::MAX)]', 'BTreeMap::from([("x".to_string(), 8589934590)])'),
      preamble="use std::collections::BTreeMap;"),
    T("longest_consecutive_streak", "values: &[i32]", "usize", MEDIUM, "hashset",
      r"""
      Returns the size of the largest set of consecutive integers (`x`, `x + 1`, `x + 2`, ...) that all occur in
      the slice, in any order. Duplicates count once; an empty slice gives 0. Should run in about linear time.
      """,
      r"""
      let set: HashSet<i64> = values.iter().map(|&v| i64::from(v)).collect();
      let mut best = 0;
      for &v in &set {
          if !set.contains(&(v - 1)) {
              let mut len = 1;
              while set.contains(&(v + len)) {
                  len += 1;
              }
              best = best.max(len as usize);
          }
      }
      best
      """,
      ("&[100, 4, 200, 1, 3, 2]", "4"), ("&[0, 3, 7, 2, 5, 8, 4, 6, 0, 1]", "9"), ("&[]", "0"), ("&[1, 1, 1]", "1"),
      ("&[-2, -1, 0, 5]", "3"), ("&[i32::MAX, i32::MIN]", "1"),
      preamble="use std::collections::HashSet;"),
    T("order_by_length", "words: &[&str]", "Vec<String>", EASY, "sorting string",
      r"""
      Sorts the words by their length in characters, shortest first; words of equal length are ordered by
      ordinary `str` comparison (Unicode code point order, so upper case sorts before lower case). Duplicates
      are kept.
      """,
      r"""
      let mut out: Vec<String> = words.iter().map(|w| w.to_string()).collect();
      out.sort_by(|a, b| a.chars().count().cmp(&b.chars().count()).then_with(|| a.cmp(b)));
      out
      """,
      ('&["pear", "fig", "apple", "kiwi"]', 'vec!["fig", "kiwi", "pear", "apple"]'),
      ('&["b", "a", "b"]', 'vec!["a", "b", "b"]'),
      ("&[]", "Vec::<String>::new()"), ('&["éa", "ab", "z"]', 'vec!["z", "ab", "éa"]'),
      ('&["abc", "Zed"]', 'vec!["Zed", "abc"]')),
    T("order_by_digit_sum", "values: &[u32]", "Vec<u32>", EASY, "sorting math",
      r"""
      Sorts the numbers by the sum of their decimal digits, smallest first; numbers with equal digit sums are
      ordered by value.
      """,
      r"""
      let digit_sum = |mut n: u32| {
          let mut s = 0;
          while n > 0 {
              s += n % 10;
              n /= 10;
          }
          s
      };
      let mut out = values.to_vec();
      out.sort_by_key(|&v| (digit_sum(v), v));
      out
      """,
      ("&[56, 23, 101, 9]", "vec![101, 23, 9, 56]"), ("&[10, 1, 100]", "vec![1, 10, 100]"),
      ("&[]", "Vec::<u32>::new()"),
      ("&[99, 0]", "vec![0, 99]"), ("&[81, 18, 9]", "vec![9, 18, 81]")),
    T("competition_ranks", "scores: &[u32]", "Vec<usize>", MEDIUM, "sorting binary-search",
      r"""
      Gives each score its competition rank: 1 plus the number of strictly higher scores, so equal scores
      share a rank and the following rank numbers are skipped ("1224" ranking). The ranks are returned in
      the order of the input.
      """,
      r"""
      let mut sorted = scores.to_vec();
      sorted.sort_unstable_by(|a, b| b.cmp(a));
      scores.iter().map(|s| sorted.partition_point(|x| x > s) + 1).collect()
      """,
      ("&[10, 20, 20, 5]", "vec![3, 1, 1, 4]"), ("&[4, 4, 4]", "vec![1, 1, 1]"), ("&[]", "Vec::<usize>::new()"),
      ("&[7]", "vec![1]"), ("&[1, 2, 3]", "vec![3, 2, 1]")),
    T("sort_ignoring_case", "words: &[&str]", "Vec<String>", EASY, "sorting string",
      r"""
      Sorts the words alphabetically ignoring case, by comparing their lower-cased forms (`str::to_lowercase`).
      Words whose lower-cased forms are equal keep their input order.
      """,
      r"""
      let mut out: Vec<String> = words.iter().map(|w| w.to_string()).collect();
      out.sort_by_cached_key(|w| w.to_lowercase());
      out
      """,
      ('&["banana", "Apple", "cherry"]', 'vec!["Apple", "banana", "cherry"]'),
      ('&["b", "B", "a"]', 'vec!["a", "b", "B"]'),
      ("&[]", "Vec::<String>::new()"), ('&["B", "b"]', 'vec!["B", "b"]'),
      ('&["Éclair", "éa"]', 'vec!["éa", "Éclair"]')),
    T("sort_by_reference", "values: &[i32], order: &[i32]", "Vec<i32>", MEDIUM, "sorting hashmap",
      r"""
      Sorts `values` so that the values that appear in `order` come first, in the order they have there (all
      copies of a value together), followed by the values that do not appear in `order`, in ascending order.
      `order` has no repeats.
      """,
      r"""
      let rank: HashMap<i32, usize> = order.iter().enumerate().map(|(i, &v)| (v, i)).collect();
      let mut out = values.to_vec();
      out.sort_by_key(|v| match rank.get(v) {
          Some(&r) => (0, r, 0),
          None => (1, 0, *v),
      });
      out
      """,
      ("&[2, 3, 1, 3, 2, 4, 6, 7, 9, 2, 19], &[2, 1, 4, 3, 9, 6]", "vec![2, 2, 2, 1, 4, 3, 3, 9, 6, 7, 19]"),
      ("&[5, -1, 3], &[]", "vec![-1, 3, 5]"), ("&[], &[1]", "Vec::<i32>::new()"), ("&[1, 2], &[3]", "vec![1, 2]"),
      ("&[3, 1, 3], &[3]", "vec![3, 3, 1]"),
      preamble="use std::collections::HashMap;"),
    # ---------------------------------------------------------------- structs and enums
    T("total_area", "shapes: &[Shape]", "f64", MEDIUM, "enum float",
      r"""
      Adds up the areas of the shapes. A circle's area is `PI * radius^2` (use `std::f64::consts::PI`), a
      rectangle's is `width * height`, and a triangle is given by its three side lengths (always a valid
      triangle), so its area follows from Heron's formula. An empty slice has total area 0.
      """,
      r"""
      shapes
          .iter()
          .map(|shape| match *shape {
              Shape::Circle { radius } => std::f64::consts::PI * radius * radius,
              Shape::Rectangle { width, height } => width * height,
              Shape::Triangle { a, b, c } => {
                  let s = (a + b + c) / 2.0;
                  (s * (s - a) * (s - b) * (s - c)).sqrt()
              }
          })
          .sum()
      """,
      ("&[Shape::Rectangle { width: 2.0, height: 3.0 }]", "6.0"),
      ("&[Shape::Triangle { a: 3.0, b: 4.0, c: 5.0 }]", "6.0"),
      ("&[]", "0.0"), ("&[Shape::Circle { radius: 1.0 }]", "std::f64::consts::PI"),
      ("&[Shape::Circle { radius: 2.0 }, Shape::Rectangle { width: 0.5, height: 2.0 }]",
       "4.0 * std::f64::consts::PI + 1.0"),
      ("&[Shape::Triangle { a: 2.0, b: 2.0, c: 2.0 }]", "3f64.sqrt()"),
      approx=True,
      preamble=r"""
      #[derive(Debug, Clone, Copy, PartialEq)]
      pub enum Shape {
          Circle { radius: f64 },
          Rectangle { width: f64, height: f64 },
          Triangle { a: f64, b: f64, c: f64 },
      }
      """),
    T("closest_to_origin", "points: &[Point]", "Option<Point>", EASY, "struct option",
      r"""
      Returns the point with the smallest Euclidean distance from the origin; on a tie, the earliest such point.
      Returns `None` for an empty slice. Coordinates may be anywhere in the `i64` range, so compare squared
      distances in a type wide enough not to overflow (such as `i128`).
      """,
      r"""
      points.iter().copied().min_by_key(|p| i128::from(p.x).pow(2) + i128::from(p.y).pow(2))
      """,
      ("&[Point { x: 3, y: 4 }, Point { x: -1, y: 1 }, Point { x: 0, y: 2 }]", "Some(Point { x: -1, y: 1 })"),
      ("&[]", "None"), ("&[Point { x: 1, y: 0 }, Point { x: 0, y: -1 }]", "Some(Point { x: 1, y: 0 })"),
      ("&[Point { x: i64::MAX, y: i64::MAX }, Point { x: i64::MIN, y: 0 }]", "Some(Point { x: i64::MIN, y: 0 })"),
      preamble=r"""
      #[derive(Debug, Clone, Copy, PartialEq, Eq)]
      pub struct Point {
          pub x: i64,
          pub y: i64,
      }
      """),
    T("final_position", "moves: &[Move]", "(i32, i32)", MEDIUM, "enum simulation",
      r"""
      A robot starts at `(0, 0)` facing north, the direction of increasing `y` (east is increasing `x`).
      `TurnLeft` and `TurnRight` rotate it 90 degrees where it stands; `Forward(n)` moves it `n` steps in the
      direction it faces (backwards when `n` is negative). Returns its final `(x, y)`.
      """,
      r"""
      let (mut x, mut y) = (0, 0);
      let (mut dx, mut dy) = (0, 1);
      for m in moves {
          match *m {
              Move::Forward(n) => {
                  x += dx * n;
                  y += dy * n;
              }
              Move::TurnLeft => (dx, dy) = (-dy, dx),
              Move::TurnRight => (dx, dy) = (dy, -dx),
          }
      }
      (x, y)
      """,
      ("&[Move::Forward(2), Move::TurnRight, Move::Forward(3)]", "(3, 2)"),
      ("&[Move::TurnLeft, Move::Forward(5)]", "(-5, 0)"),
      ("&[]", "(0, 0)"), ("&[Move::TurnRight, Move::TurnRight, Move::Forward(4)]", "(0, -4)"),
      ("&[Move::Forward(-3)]", "(0, -3)"),
      ("&[Move::TurnLeft, Move::TurnLeft, Move::TurnLeft, Move::TurnLeft, Move::Forward(1)]", "(0, 1)"),
      preamble=r"""
      #[derive(Debug, Clone, Copy, PartialEq, Eq)]
      pub enum Move {
          Forward(i32),
          TurnLeft,
          TurnRight,
      }
      """),
    T("run_ops", "ops: &[Op]", "Option<Vec<i64>>", MEDIUM, "enum stack option overflow",
      r"""
      Runs the operations on an initially empty stack and returns the final stack, bottom first. `Push(n)`
      pushes `n`; `Pop` discards the top value; `Dup` pushes a copy of the top value; `Swap` exchanges the top
      two values; `Add` and `Mul` pop two values and push their sum or product. Returns `None` if an operation
      needs more values than the stack holds, or if a result overflows `i64`.
      """,
      r"""
      let mut stack: Vec<i64> = Vec::new();
      for &op in ops {
          match op {
              Op::Push(n) => stack.push(n),
              Op::Pop => {
                  stack.pop()?;
              }
              Op::Dup => {
                  let top = *stack.last()?;
                  stack.push(top);
              }
              Op::Swap => {
                  let n = stack.len();
                  if n < 2 {
                      return None;
                  }
                  stack.swap(n - 1, n - 2);
              }
              Op::Add | Op::Mul => {
                  let b = stack.pop()?;
                  let a = stack.pop()?;
                  stack.push(if op == Op::Add { a.checked_add(b)? } else { a.checked_mul(b)? });
              }
          }
      }
      Some(stack)
      """,
      ("&[Op::Push(2), Op::Push(3), Op::Add, Op::Dup, Op::Mul]", "Some(vec![25])"), ("&[Op::Pop]", "None"),
      ("&[]", "Some(vec![])"), ("&[Op::Push(1), Op::Push(2), Op::Swap]", "Some(vec![2, 1])"),
      ("&[Op::Push(1), Op::Add]", "None"),
      ("&[Op::Push(i64::MAX), Op::Push(2), Op::Mul]", "None"), ("&[Op::Push(1), Op::Swap]", "None"),
      ("&[Op::Push(5), Op::Pop, Op::Push(-1)]", "Some(vec![-1])"), ("&[Op::Dup]", "None"),
      preamble=r"""
      #[derive(Debug, Clone, Copy, PartialEq, Eq)]
      pub enum Op {
          Push(i64),
          Pop,
          Add,
          Mul,
          Dup,
          Swap,
      }
      """),
    T("net_balances", "transfers: &[Transfer]", "BTreeMap<String, i64>", EASY, "struct btreemap",
      r"""
      Computes every party's net balance from a list of transfers: the sender's balance goes down by `cents`
      and the receiver's goes up by the same amount. Every name taking part in a transfer appears in the result,
      even when its balance ends at 0 (a transfer to oneself changes nothing but still lists the name).
      """,
      r"""
      let mut balances: BTreeMap<String, i64> = BTreeMap::new();
      for t in transfers {
          *balances.entry(t.from.clone()).or_insert(0) -= t.cents;
          *balances.entry(t.to.clone()).or_insert(0) += t.cents;
      }
      balances
      """,
      ('&[Transfer { from: "ann".to_string(), to: "bob".to_string(), cents: 500 }]',
       'BTreeMap::from([("ann".to_string(), -500), ("bob".to_string(), 500)])'),
      ("&[]", "BTreeMap::new()"),
      'let t = |from: &str, to: &str, cents: i64| Transfer { from: from.to_string(), to: to.to_string(), cents };',
      'let m = net_balances(&[t("a", "b", 10), t("b", "a", 10), t("c", "c", 7)]);',
      'assert_eq!(m, BTreeMap::from([("a".to_string(), 0), ("b".to_string(), 0), ("c".to_string(), 0)]));',
      'assert_eq!(net_balances(&[t("x", "y", 3), t("y", "z", 5)])["y"], -2);',
      preamble=r"""
      use std::collections::BTreeMap;

      #[derive(Debug, Clone, PartialEq)]
      pub struct Transfer {
          pub from: String,
          pub to: String,
          pub cents: i64,
      }
      """),
    T("tokenize", "text: &str", "Option<Vec<Token>>", HARD, "enum parsing option",
      r"""
      Splits an expression into tokens, left to right. A maximal run of ASCII digits is a `Num` (`None` if it
      overflows `u64`); an identifier, an ASCII letter or `_` followed by any ASCII letters, digits and `_`, is
      an `Ident`; each of `+ - * / =` is an `Op`; `(` and `)` are `LParen` and `RParen`. Whitespace separates
      tokens and is otherwise skipped. Any other character makes the result `None`. Note that `12ab` is the
      number 12 followed by the identifier `ab`.
      """,
      r"""
      let chars: Vec<char> = text.chars().collect();
      let mut tokens = Vec::new();
      let mut i = 0;
      while i < chars.len() {
          let c = chars[i];
          let start = i;
          if c.is_whitespace() {
              i += 1;
          } else if c.is_ascii_digit() {
              while i < chars.len() && chars[i].is_ascii_digit() {
                  i += 1;
              }
              let digits: String = chars[start..i].iter().collect();
              tokens.push(Token::Num(digits.parse().ok()?));
          } else if c.is_ascii_alphabetic() || c == '_' {
              while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                  i += 1;
              }
              tokens.push(Token::Ident(chars[start..i].iter().collect()));
          } else {
              tokens.push(match c {
                  '+' | '-' | '*' | '/' | '=' => Token::Op(c),
                  '(' => Token::LParen,
                  ')' => Token::RParen,
                  _ => return None,
              });
              i += 1;
          }
      }
      Some(tokens)
      """,
      ('"x = (a1 + 42)"', 'Some(vec![Token::Ident("x".to_string()), Token::Op(\'=\'), Token::LParen, '
       'Token::Ident("a1".to_string()), Token::Op(\'+\'), Token::Num(42), Token::RParen])'),
      ('"3 % 2"', "None"), ('""', "Some(vec![])"),
      ('"12ab"', 'Some(vec![Token::Num(12), Token::Ident("ab".to_string())])'),
      ('"99999999999999999999"', "None"), ('"18446744073709551615"', "Some(vec![Token::Num(u64::MAX)])"),
      ('"_tmp*2"', "Some(vec![Token::Ident(\"_tmp\".to_string()), Token::Op('*'), Token::Num(2)])"), ('"é"', "None"),
      ('"a\\tb"', 'Some(vec![Token::Ident("a".to_string()), Token::Ident("b".to_string())])'),
      preamble=r"""
      #[derive(Debug, Clone, PartialEq, Eq)]
      pub enum Token {
          Num(u64),
          Ident(String),
          Op(char),
          LParen,
          RParen,
      }
      """),
    T("overlap_area", "a: &Rect, b: &Rect", "u64", MEDIUM, "struct geometry overflow",
      r"""
      Returns the area shared by two axis-aligned rectangles. A rectangle covers `x` up to `x + width` and `y`
      up to `y + height`; rectangles that only touch along an edge or at a corner share no area. Coordinates
      and sizes may be near the limits of their types, so compute in wider integers.
      """,
      r"""
      fn span(a0: i32, alen: u32, b0: i32, blen: u32) -> u64 {
          let start = i64::from(a0).max(i64::from(b0));
          let end = (i64::from(a0) + i64::from(alen)).min(i64::from(b0) + i64::from(blen));
          (end - start).max(0) as u64
      }
      span(a.x, a.width, b.x, b.width) * span(a.y, a.height, b.y, b.height)
      """,
      ("&Rect { x: 0, y: 0, width: 4, height: 3 }, &Rect { x: 2, y: 1, width: 5, height: 5 }", "4"),
      ("&Rect { x: 0, y: 0, width: 2, height: 2 }, &Rect { x: 2, y: 0, width: 2, height: 2 }", "0"),
      ("&Rect { x: 0, y: 0, width: 10, height: 10 }, &Rect { x: 3, y: 3, width: 2, height: 2 }", "4"),
      ("&Rect { x: -5, y: -5, width: 3, height: 3 }, &Rect { x: -4, y: -4, width: 1, height: 1 }", "1"),
      ("&Rect { x: 0, y: 0, width: 0, height: 5 }, &Rect { x: 0, y: 0, width: 5, height: 5 }", "0"),
      "let big = Rect { x: i32::MIN, y: i32::MAX, width: u32::MAX, height: 1 };",
      "assert_eq!(overlap_area(&big, &big), u64::from(u32::MAX));",
      preamble=r"""
      #[derive(Debug, Clone, Copy, PartialEq, Eq)]
      pub struct Rect {
          pub x: i32,
          pub y: i32,
          pub width: u32,
          pub height: u32,
      }
      """),
    T("best_average", "students: &[Student]", "Option<String>", MEDIUM, "struct float option",
      r"""
      Returns the name of the student with the highest average score. A student without scores has average 0.
      On a tie, the student listed first wins. Returns `None` for an empty slice.
      """,
      r"""
      let average = |s: &Student| {
          if s.scores.is_empty() {
              0.0
          } else {
              s.scores.iter().map(|&x| f64::from(x)).sum::<f64>() / s.scores.len() as f64
          }
      };
      let mut best: Option<&Student> = None;
      for s in students {
          if best.map_or(true, |b| average(s) > average(b)) {
              best = Some(s);
          }
      }
      best.map(|s| s.name.clone())
      """,
      ('&[Student { name: "ada".to_string(), scores: vec![90, 80] }, '
       'Student { name: "bo".to_string(), scores: vec![95] }]',
       'Some("bo".to_string())'),
      ("&[]", "None"),
      "let st = |name: &str, scores: Vec<u32>| Student { name: name.to_string(), scores };",
      'assert_eq!(best_average(&[st("x", vec![2, 4]), st("y", vec![3])]), Some("x".to_string()));',
      'assert_eq!(best_average(&[st("n", vec![]), st("m", vec![0])]), Some("n".to_string()));',
      'assert_eq!(best_average(&[st("a", vec![1, 2]), st("b", vec![2, 4, 3])]), Some("b".to_string()));',
      preamble=r"""
      #[derive(Debug, Clone, PartialEq)]
      pub struct Student {
          pub name: String,
          pub scores: Vec<u32>,
      }
      """),
    T("eval_expr", "expr: &Expr", "Option<i64>", EASY, "enum recursion option overflow",
      r"""
      Evaluates an expression tree, returning `None` if any intermediate result overflows `i64` (negating
      `i64::MIN` included).
      """,
      r"""
      match expr {
          Expr::Num(n) => Some(*n),
          Expr::Neg(inner) => eval_expr(inner)?.checked_neg(),
          Expr::Add(a, b) => eval_expr(a)?.checked_add(eval_expr(b)?),
          Expr::Mul(a, b) => eval_expr(a)?.checked_mul(eval_expr(b)?),
      }
      """,
      ("&Expr::Num(7)", "Some(7)"), ("&Expr::Add(Box::new(Expr::Num(2)), Box::new(Expr::Num(3)))", "Some(5)"),
      "let n = |v: i64| Box::new(Expr::Num(v));",
      "assert_eq!(eval_expr(&Expr::Mul(Box::new(Expr::Add(n(1), n(2))), Box::new(Expr::Neg(n(4))))), Some(-12));",
      "assert_eq!(eval_expr(&Expr::Neg(n(i64::MIN))), None);",
      "assert_eq!(eval_expr(&Expr::Mul(n(i64::MAX), n(2))), None);",
      "assert_eq!(eval_expr(&Expr::Neg(Box::new(Expr::Neg(n(-5))))), Some(-5));",
      preamble=r"""
      #[derive(Debug, Clone, PartialEq)]
      pub enum Expr {
          Num(i64),
          Neg(Box<Expr>),
          Add(Box<Expr>, Box<Expr>),
          Mul(Box<Expr>, Box<Expr>),
      }
      """),
    T("names_oldest_first", "people: &[Person]", "Vec<String>", EASY, "struct sorting",
      r"""
      Returns the names of the people ordered by age, oldest first; people of the same age are ordered by name
      (ordinary `String` comparison).
      """,
      r"""
      let mut sorted: Vec<&Person> = people.iter().collect();
      sorted.sort_by(|a, b| b.age.cmp(&a.age).then_with(|| a.name.cmp(&b.name)));
      sorted.into_iter().map(|p| p.name.clone()).collect()
      """,
      ('&[Person { name: "ann".to_string(), age: 30 }, Person { name: "bob".to_string(), age: 41 }]',
       'vec!["bob", "ann"]'),
      ("&[]", "Vec::<String>::new()"),
      "let p = |name: &str, age: u32| Person { name: name.to_string(), age };",
      'assert_eq!(names_oldest_first(&[p("cy", 30), p("bob", 41), p("al", 30)]), vec!["bob", "al", "cy"]);',
      'assert_eq!(names_oldest_first(&[p("z", 0), p("z", 0)]), vec!["z", "z"]);',
      preamble=r"""
      #[derive(Debug, Clone, PartialEq)]
      pub struct Person {
          pub name: String,
          pub age: u32,
      }
      """),
    T("best_knapsack_value", "items: &[Item], capacity: u32", "u64", HARD, "struct dp",
      r"""
      Returns the largest total value of a selection of items, each used at most once, whose total weight is
      at most `capacity`. Items of weight 0 can always be taken. Capacities are at most a few thousand.
      """,
      r"""
      let cap = capacity as usize;
      let mut best = vec![0u64; cap + 1];
      for item in items {
          let w = item.weight as usize;
          if w > cap {
              continue;
          }
          for c in (w..=cap).rev() {
              best[c] = best[c].max(best[c - w] + u64::from(item.value));
          }
      }
      best[cap]
      """,
      ("&[Item { weight: 1, value: 1 }, Item { weight: 3, value: 4 }, Item { weight: 4, value: 5 }, "
       "Item { weight: 5, value: 7 }], 7",
       "9"),
      ("&[], 10", "0"), ("&[Item { weight: 5, value: 10 }], 4", "0"),
      ("&[Item { weight: 0, value: 3 }, Item { weight: 2, value: 2 }], 0", "3"),
      ("&[Item { weight: 2, value: 3 }, Item { weight: 2, value: 3 }, Item { weight: 2, value: 3 }], 5", "6"),
      ("&[Item { weight: 10, value: u32::MAX }, Item { weight: 10, value: u32::MAX }], 20", "8589934590"),
      preamble=r"""
      #[derive(Debug, Clone, Copy, PartialEq, Eq)]
      pub struct Item {
          pub weight: u32,
          pub value: u32,
      }
      """),
    # ---------------------------------------------------------------- matrices and grids
    T("transpose", "matrix: &[Vec<i64>]", "Vec<Vec<i64>>", EASY, "matrix",
      r"""
      Returns the transpose of a rectangular matrix given as a list of rows: row `i` of the result is column
      `i` of the input. An empty matrix, or one whose rows are all empty, gives an empty matrix.
      """,
      r"""
      let cols = matrix.first().map_or(0, Vec::len);
      (0..cols).map(|j| matrix.iter().map(|row| row[j]).collect()).collect()
      """,
      ("&[vec![1, 2, 3], vec![4, 5, 6]]", "vec![vec![1, 4], vec![2, 5], vec![3, 6]]"),
      ("&[vec![1], vec![2]]", "vec![vec![1, 2]]"),
      ("&[]", "Vec::<Vec<i64>>::new()"), ("&[vec![], vec![]]", "Vec::<Vec<i64>>::new()"),
      ("&[vec![7]]", "vec![vec![7]]")),
    T("spiral_order", "matrix: &[Vec<i64>]", "Vec<i64>", HARD, "matrix",
      r"""
      Returns the elements of a rectangular matrix in clockwise spiral order: along the top row from left to
      right, down the right column, back along the bottom row, up the left column, and so on inwards. Every
      element appears exactly once. An empty matrix (or one with empty rows) gives an empty vector.
      """,
      r"""
      let mut out = Vec::new();
      if matrix.is_empty() || matrix[0].is_empty() {
          return out;
      }
      let (mut top, mut bottom) = (0isize, matrix.len() as isize - 1);
      let (mut left, mut right) = (0isize, matrix[0].len() as isize - 1);
      while top <= bottom && left <= right {
          for j in left..=right {
              out.push(matrix[top as usize][j as usize]);
          }
          top += 1;
          for i in top..=bottom {
              out.push(matrix[i as usize][right as usize]);
          }
          right -= 1;
          if top <= bottom {
              for j in (left..=right).rev() {
                  out.push(matrix[bottom as usize][j as usize]);
              }
              bottom -= 1;
          }
          if left <= right {
              for i in (top..=bottom).rev() {
                  out.push(matrix[i as usize][left as usize]);
              }
              left += 1;
          }
      }
      out
      """,
      ("&[vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]", "vec![1, 2, 3, 6, 9, 8, 7, 4, 5]"),
      ("&[vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9, 10, 11, 12]]", "vec![1, 2, 3, 4, 8, 12, 11, 10, 9, 5, 6, 7]"),
      ("&[]", "Vec::<i64>::new()"), ("&[vec![]]", "Vec::<i64>::new()"),
      ("&[vec![1], vec![2], vec![3]]", "vec![1, 2, 3]"),
      ("&[vec![1, 2]]", "vec![1, 2]"), ("&[vec![1, 2], vec![3, 4], vec![5, 6]]", "vec![1, 2, 4, 6, 5, 3]")),
    T("matrix_product", "a: &[Vec<i64>], b: &[Vec<i64>]", "Option<Vec<Vec<i64>>>", MEDIUM, "matrix option",
      r"""
      Multiplies matrix `a` (n rows of m columns) by matrix `b` (m rows of p columns), both given as lists of
      rows. Returns `None` if either matrix has no rows, has an empty first row, or has rows of different
      lengths, or if the number of columns of `a` differs from the number of rows of `b`.
      """,
      r"""
      let shape = |m: &[Vec<i64>]| -> Option<usize> {
          let cols = m.first()?.len();
          (cols > 0 && m.iter().all(|r| r.len() == cols)).then_some(cols)
      };
      let (a_cols, b_cols) = (shape(a)?, shape(b)?);
      if a_cols != b.len() {
          return None;
      }
      Some(a.iter().map(|row| (0..b_cols).map(|j| (0..a_cols).map(|k| row[k] * b[k][j]).sum()).collect()).collect())
      """,
      ("&[vec![1, 2], vec![3, 4]], &[vec![5, 6], vec![7, 8]]", "Some(vec![vec![19, 22], vec![43, 50]])"),
      ("&[vec![1, 2]], &[vec![1, 2]]", "None"),
      ("&[vec![1, 2, 3]], &[vec![1], vec![2], vec![3]]", "Some(vec![vec![14]])"),
      ("&[], &[vec![1]]", "None"), ("&[vec![1, 2], vec![3]], &[vec![1], vec![1]]", "None"),
      ("&[vec![2]], &[vec![-3, 4]]", "Some(vec![vec![-6, 8]])"), ("&[vec![]], &[vec![]]", "None")),
    T("rotate_clockwise", "matrix: &[Vec<i64>]", "Vec<Vec<i64>>", EASY, "matrix",
      r"""
      Rotates a rectangular matrix (a list of rows) 90 degrees clockwise: an r-by-c matrix becomes c-by-r, and
      the first column read from bottom to top becomes the first row. An empty matrix, or one whose rows are
      empty, gives an empty matrix.
      """,
      r"""
      let cols = matrix.first().map_or(0, Vec::len);
      (0..cols).map(|j| matrix.iter().rev().map(|row| row[j]).collect()).collect()
      """,
      ("&[vec![1, 2], vec![3, 4]]", "vec![vec![3, 1], vec![4, 2]]"),
      ("&[vec![1, 2, 3], vec![4, 5, 6]]", "vec![vec![4, 1], vec![5, 2], vec![6, 3]]"),
      ("&[]", "Vec::<Vec<i64>>::new()"), ("&[vec![1, 2, 3]]", "vec![vec![1], vec![2], vec![3]]"),
      ("&[vec![1], vec![2], vec![3]]", "vec![vec![3, 2, 1]]")),
    T("is_toeplitz", "matrix: &[Vec<i64>]", "bool", EASY, "matrix",
      r"""
      Tells whether every diagonal running from top-left to bottom-right of a rectangular matrix has all
      elements equal. Empty matrices, single rows and single columns qualify.
      """,
      r"""
      matrix.windows(2).all(|w| w[0].iter().zip(w[1].iter().skip(1)).all(|(a, b)| a == b))
      """,
      ("&[vec![1, 2, 3, 4], vec![5, 1, 2, 3], vec![9, 5, 1, 2]]", "true"), ("&[vec![1, 2], vec![2, 2]]", "false"),
      ("&[]", "true"),
      ("&[vec![1, 2, 3]]", "true"), ("&[vec![1], vec![2], vec![3]]", "true"),
      ("&[vec![7, 8], vec![6, 7], vec![5, 6]]", "true")),
    T("min_path_cost", "grid: &[Vec<u64>]", "Option<u64>", MEDIUM, "matrix dp option",
      r"""
      Returns the smallest sum of a path from the top-left to the bottom-right cell of a rectangular grid,
      moving only right or down and counting every visited cell, both ends included. Returns `None` for a grid
      without rows or with empty rows.
      """,
      r"""
      let cols = grid.first()?.len();
      if cols == 0 {
          return None;
      }
      let mut best = vec![u64::MAX; cols];
      best[0] = 0;
      for row in grid {
          for j in 0..cols {
              let from_left = if j > 0 { best[j - 1] } else { u64::MAX };
              best[j] = best[j].min(from_left) + row[j];
          }
      }
      Some(best[cols - 1])
      """,
      ("&[vec![1, 3, 1], vec![1, 5, 1], vec![4, 2, 1]]", "Some(7)"), ("&[vec![1, 100], vec![1, 1]]", "Some(3)"),
      ("&[]", "None"),
      ("&[vec![]]", "None"), ("&[vec![5]]", "Some(5)"), ("&[vec![1, 2, 3]]", "Some(6)"),
      ("&[vec![1], vec![2], vec![3]]", "Some(6)")),
    T("count_islands", "grid: &[&str]", "usize", HARD, "grid search",
      r"""
      Counts the islands on a map where `#` is land and every other character is water. Land cells belong to
      the same island when they touch horizontally or vertically (diagonal contact does not connect). Each
      character is one cell; rows may have different lengths, and cells beyond the end of a row are water.
      """,
      r"""
      let cells: Vec<Vec<bool>> = grid.iter().map(|row| row.chars().map(|c| c == '#').collect()).collect();
      let mut seen: Vec<Vec<bool>> = cells.iter().map(|row| vec![false; row.len()]).collect();
      let land = |r: usize, c: usize| cells.get(r).and_then(|row| row.get(c)).copied().unwrap_or(false);
      let mut islands = 0;
      for r in 0..cells.len() {
          for c in 0..cells[r].len() {
              if !cells[r][c] || seen[r][c] {
                  continue;
              }
              islands += 1;
              seen[r][c] = true;
              let mut stack = vec![(r, c)];
              while let Some((i, j)) = stack.pop() {
                  let mut next = vec![(i + 1, j), (i, j + 1)];
                  if i > 0 {
                      next.push((i - 1, j));
                  }
                  if j > 0 {
                      next.push((i, j - 1));
                  }
                  for (ni, nj) in next {
                      if land(ni, nj) && !seen[ni][nj] {
                          seen[ni][nj] = true;
                          stack.push((ni, nj));
                      }
                  }
              }
          }
      }
      islands
      """,
      ('&["##..", "#..#", "...#"]', "2"), ('&["#.#", ".#.", "#.#"]', "5"), ("&[]", "0"), ('&["....", ".."]', "0"),
      ('&["###", "#.#", "###"]', "1"), ('&["#", "##", ".#"]', "1"), ('&["#.", "", "#"]', "2"),
      ('&["..#", "###"]', "1")),
    T("life_step", "grid: &[&str]", "Vec<String>", HARD, "grid simulation",
      r"""
      Advances Conway's Game of Life by one generation on a finite grid of equally long rows, where `#` is a
      live cell and `.` a dead one; cells beyond the edges count as dead. A live cell with 2 or 3 live
      neighbours (out of its 8) stays alive, a dead cell with exactly 3 live neighbours becomes alive, and
      every other cell is dead in the next generation. Returns the new grid in the same format.
      """,
      r"""
      let cells: Vec<&[u8]> = grid.iter().map(|row| row.as_bytes()).collect();
      let alive = |r: isize, c: isize| -> bool {
          r >= 0 && c >= 0 && cells.get(r as usize).and_then(|row| row.get(c as usize)) == Some(&b'#')
      };
      (0..cells.len())
          .map(|r| {
              (0..cells[r].len())
                  .map(|c| {
                      let (r, c) = (r as isize, c as isize);
                      let mut n = 0;
                      for dr in -1..=1 {
                          for dc in -1..=1 {
                              if (dr, dc) != (0, 0) && alive(r + dr, c + dc) {
                                  n += 1;
                              }
                          }
                      }
                      if n == 3 || (n == 2 && alive(r, c)) { '#' } else { '.' }
                  })
                  .collect()
          })
          .collect()
      """,
      ('&[".....", "..#..", "..#..", "..#..", "....."]', 'vec![".....", ".....", ".###.", ".....", "....."]'),
      ('&["##", "##"]', 'vec!["##", "##"]'), ("&[]", "Vec::<String>::new()"), ('&["#"]', 'vec!["."]'),
      ('&["#.#", "...", ".#."]', 'vec!["...", ".#.", "..."]'), ('&["###"]', 'vec![".#."]')),
    # ---------------------------------------------------------------- recursion and dynamic programming
    T("fib_u64", "n: u32", "Option<u64>", EASY, "math dp overflow option",
      r"""
      Returns the n-th Fibonacci number, with F(0) = 0 and F(1) = 1, or `None` when it does not fit in a `u64`
      (from n = 94 on). Must be fast even for `n = u32::MAX`.
      """,
      r"""
      if n == 0 {
          return Some(0);
      }
      let (mut a, mut b) = (0u64, 1u64);
      for _ in 1..n {
          let next = a.checked_add(b)?;
          a = b;
          b = next;
      }
      Some(b)
      """,
      ("10", "Some(55)"), ("94", "None"), ("0", "Some(0)"), ("1", "Some(1)"), ("2", "Some(1)"),
      ("93", "Some(12200160415121876738)"), ("u32::MAX", "None")),
    T("longest_increasing_subsequence", "values: &[i32]", "usize", HARD, "dp binary-search",
      r"""
      Returns the length of the longest strictly increasing subsequence: elements taken in their original
      order, not necessarily adjacent, each greater than the one before. Should handle tens of thousands of
      values quickly (O(n log n)).
      """,
      r"""
      let mut tails: Vec<i32> = Vec::new();
      for &v in values {
          let i = tails.partition_point(|&t| t < v);
          if i == tails.len() {
              tails.push(v);
          } else {
              tails[i] = v;
          }
      }
      tails.len()
      """,
      ("&[10, 9, 2, 5, 3, 7, 101, 18]", "4"), ("&[7, 7, 7]", "1"), ("&[]", "0"), ("&[1, 2, 3]", "3"),
      ("&[3, 2, 1]", "1"),
      ("&[0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15]", "6"),
      "let long: Vec<i32> = (0..50_000).map(|i| (i % 1000) * 7 - i / 1000).collect();",
      "assert_eq!(longest_increasing_subsequence(&long), 1000);"),
    T("fewest_coins", "coins: &[u32], amount: u32", "Option<u32>", MEDIUM, "dp option",
      r"""
      Returns the smallest number of coins that add up to exactly `amount`, using any number of coins of each
      value, or `None` if it cannot be done. An amount of 0 needs 0 coins; coin values of 0 are ignored.
      Amounts are at most about ten thousand.
      """,
      r"""
      let amount = amount as usize;
      let mut best: Vec<Option<u32>> = vec![None; amount + 1];
      best[0] = Some(0);
      for a in 1..=amount {
          for &c in coins {
              let c = c as usize;
              if c == 0 || c > a {
                  continue;
              }
              if let Some(n) = best[a - c] {
                  if best[a].map_or(true, |m| n + 1 < m) {
                      best[a] = Some(n + 1);
                  }
              }
          }
      }
      best[amount]
      """,
      ("&[1, 2, 5], 11", "Some(3)"), ("&[2], 3", "None"), ("&[1], 0", "Some(0)"), ("&[], 0", "Some(0)"),
      ("&[], 7", "None"),
      ("&[0, 3], 9", "Some(3)"), ("&[1, 3, 4], 6", "Some(2)"), ("&[186, 419, 83, 408], 6249", "Some(20)")),
    T("count_coin_combinations", "coins: &[u32], amount: u32", "u64", MEDIUM, "dp",
      r"""
      Counts the ways to make exactly `amount` from the given coin values, each usable any number of times.
      Order does not matter (1 + 2 and 2 + 1 are the same way). An amount of 0 can be made in exactly one way
      (no coins). Coin values of 0 are ignored; the coin values are distinct.
      """,
      r"""
      let amount = amount as usize;
      let mut ways = vec![0u64; amount + 1];
      ways[0] = 1;
      for &c in coins {
          let c = c as usize;
          if c == 0 {
              continue;
          }
          for a in c..=amount {
              ways[a] += ways[a - c];
          }
      }
      ways[amount]
      """,
      ("&[1, 2, 5], 5", "4"), ("&[2], 3", "0"), ("&[10], 0", "1"), ("&[], 0", "1"), ("&[], 3", "0"),
      ("&[0, 1], 3", "1"),
      ("&[1, 5, 10, 25, 50], 100", "292")),
    T("stair_climbs", "steps: u32, max_stride: u32", "u64", EASY, "dp",
      r"""
      Counts the ordered ways to climb `steps` stairs when each stride covers between 1 and `max_stride` stairs.
      Climbing 0 stairs can be done in exactly one way (doing nothing); with `max_stride` 0, no positive number
      of stairs can be climbed.
      """,
      r"""
      let n = steps as usize;
      let mut ways = vec![0u64; n + 1];
      ways[0] = 1;
      for i in 1..=n {
          for s in 1..=(max_stride as usize).min(i) {
              ways[i] += ways[i - s];
          }
      }
      ways[n]
      """,
      ("4, 2", "5"), ("4, 3", "7"), ("0, 0", "1"), ("3, 0", "0"), ("10, 1", "1"), ("5, 10", "16"),
      ("30, 2", "1346269")),
    T("splits_evenly", "values: &[u32]", "bool", HARD, "dp subset",
      r"""
      Tells whether the values can be divided into two groups with equal sums, every value going into exactly
      one group (a group may be empty). An empty slice can be split (0 = 0). The total of the values is at most
      a few tens of thousands.
      """,
      r"""
      let total: u64 = values.iter().map(|&v| u64::from(v)).sum();
      if total % 2 == 1 {
          return false;
      }
      let half = (total / 2) as usize;
      let mut reachable = vec![false; half + 1];
      reachable[0] = true;
      for &v in values {
          let v = v as usize;
          if v > half {
              return false;
          }
          for s in (v..=half).rev() {
              if reachable[s - v] {
                  reachable[s] = true;
              }
          }
      }
      reachable[half]
      """,
      ("&[1, 5, 11, 5]", "true"), ("&[1, 2, 3, 5]", "false"), ("&[]", "true"), ("&[0]", "true"), ("&[7]", "false"),
      ("&[2, 2]", "true"), ("&[3, 1, 1, 2, 2, 1]", "true"), ("&[100, 1, 1]", "false")),
    T("lattice_paths", "rows: u32, cols: u32", "u64", EASY, "dp math",
      r"""
      Counts the paths from the top-left cell to the bottom-right cell of a `rows` by `cols` grid that move only
      right or down. A grid with no rows or no columns has no paths; a 1 by 1 grid has one (the empty path).
      """,
      r"""
      if rows == 0 || cols == 0 {
          return 0;
      }
      let mut row = vec![1u64; cols as usize];
      for _ in 1..rows {
          for j in 1..row.len() {
              row[j] += row[j - 1];
          }
      }
      row[row.len() - 1]
      """,
      ("3, 7", "28"), ("2, 2", "2"), ("0, 5", "0"), ("5, 0", "0"), ("1, 1", "1"), ("3, 3", "6"), ("1, 10", "1"),
      ("17, 17", "601080390")),
    T("distinct_permutations", "text: &str", "Vec<String>", HARD, "recursion permutation string",
      r"""
      Returns every distinct rearrangement of the characters of `text`, each exactly once even when characters
      repeat, sorted in ascending `String` order. The empty string has exactly one permutation, itself.
      """,
      r"""
      let mut chars: Vec<char> = text.chars().collect();
      chars.sort_unstable();
      let mut out = vec![chars.iter().collect::<String>()];
      loop {
          let mut i = chars.len();
          while i > 1 && chars[i - 2] >= chars[i - 1] {
              i -= 1;
          }
          if i <= 1 {
              return out;
          }
          let pivot = i - 2;
          let mut j = chars.len() - 1;
          while chars[j] <= chars[pivot] {
              j -= 1;
          }
          chars.swap(pivot, j);
          chars[pivot + 1..].reverse();
          out.push(chars.iter().collect());
      }
      """,
      ('"aab"', 'vec!["aab", "aba", "baa"]'), ('"cba"', 'vec!["abc", "acb", "bac", "bca", "cab", "cba"]'),
      ('""', 'vec![""]'),
      ('"x"', 'vec!["x"]'), ('"aaaa"', 'vec!["aaaa"]'), ('"éa"', 'vec!["aé", "éa"]'),
      'assert_eq!(distinct_permutations("abcde").len(), 120);', 'assert_eq!(distinct_permutations("aabb").len(), 6);'),
    T("all_subsets", "values: &[i32]", "Vec<Vec<i32>>", MEDIUM, "recursion bits",
      r"""
      Returns all 2^n subsets of the n values in a fixed order: subset number `k` (for `k` from 0 to 2^n - 1)
      contains `values[i]` exactly when bit `i` of `k` is set, with its elements in input order. So the first
      subset is empty and the last is the whole slice. There are at most 20 values.
      """,
      r"""
      let n = values.len();
      (0..1usize << n)
          .map(|mask| (0..n).filter(|&i| mask >> i & 1 == 1).map(|i| values[i]).collect())
          .collect()
      """,
      ("&[1, 2]", "vec![vec![], vec![1], vec![2], vec![1, 2]]"), ("&[]", "vec![Vec::<i32>::new()]"),
      ("&[7]", "vec![vec![], vec![7]]"),
      ("&[1, 2, 3]", "vec![vec![], vec![1], vec![2], vec![1, 2], vec![3], vec![1, 3], vec![2, 3], vec![1, 2, 3]]"),
      "assert_eq!(all_subsets(&[5; 10]).len(), 1024);"),
    T("hanoi_moves", "n: u32", "Vec<(u8, u8)>", MEDIUM, "recursion",
      r"""
      Returns the moves that carry a tower of `n` disks from peg 1 to peg 3 using peg 2, following the classic
      recursive strategy: move the top n - 1 disks from the source to the spare peg, move the largest disk to
      the target, then move the n - 1 disks from the spare peg to the target. Each move is `(from, to)`.
      `n = 0` needs no moves.
      """,
      r"""
      fn solve(n: u32, from: u8, to: u8, spare: u8, moves: &mut Vec<(u8, u8)>) {
          if n == 0 {
              return;
          }
          solve(n - 1, from, spare, to, moves);
          moves.push((from, to));
          solve(n - 1, spare, to, from, moves);
      }
      let mut moves = Vec::new();
      solve(n, 1, 3, 2, &mut moves);
      moves
      """,
      ("1", "vec![(1, 3)]"), ("2", "vec![(1, 2), (1, 3), (2, 3)]"), ("0", "Vec::<(u8, u8)>::new()"),
      ("3", "vec![(1, 3), (1, 2), (3, 2), (1, 3), (2, 1), (2, 3), (1, 3)]"),
      "assert_eq!(hanoi_moves(10).len(), 1023);"),
    T("count_decodings", "digits: &str", "u64", HARD, "dp string",
      r"""
      Letters are encoded as numbers, `A` = 1 up to `Z` = 26, and written one after another without separators.
      Counts the ways to decode `digits` back into letters: each letter comes from a one-digit code 1-9 or a
      two-digit code 10-26 (a code never starts with 0). Returns 0 when no decoding exists, for an empty string,
      and for a string containing anything other than ASCII digits.
      """,
      r"""
      let bytes = digits.as_bytes();
      if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
          return 0;
      }
      let n = bytes.len();
      let mut ways = vec![0u64; n + 1];
      ways[0] = 1;
      for i in 1..=n {
          if bytes[i - 1] != b'0' {
              ways[i] += ways[i - 1];
          }
          if i >= 2 {
              let two = (bytes[i - 2] - b'0') * 10 + (bytes[i - 1] - b'0');
              if (10..=26).contains(&two) {
                  ways[i] += ways[i - 2];
              }
          }
      }
      ways[n]
      """,
      ('"12"', "2"), ('"226"', "3"), ('""', "0"), ('"06"', "0"), ('"10"', "1"), ('"100"', "0"), ('"11106"', "2"),
      ('"1a"', "0"),
      ('"27"', "1"), ('"1111111111"', "89")),
    T("best_non_adjacent_sum", "values: &[i64]", "i64", MEDIUM, "dp",
      r"""
      Returns the largest sum of values chosen so that no two chosen values are neighbours in the slice.
      Choosing nothing is allowed, so the result is never negative.
      """,
      r"""
      let (mut take, mut skip) = (0i64, 0i64);
      for &v in values {
          let with_v = skip + v;
          skip = skip.max(take);
          take = with_v;
      }
      take.max(skip)
      """,
      ("&[2, 7, 9, 3, 1]", "12"), ("&[5, 1, 1, 5]", "10"), ("&[]", "0"), ("&[-5, -1]", "0"), ("&[5]", "5"),
      ("&[3, -2, 4]", "7")),
    T("catalan", "n: u32", "Option<u64>", MEDIUM, "math dp overflow option",
      r"""
      Returns the n-th Catalan number (1, 1, 2, 5, 14, 42, ... for n = 0, 1, 2, ...), or `None` when it does not
      fit in a `u64` (from n = 37 on).
      """,
      r"""
      let mut c: u128 = 1;
      for i in 0..u128::from(n) {
          c = c * 2 * (2 * i + 1) / (i + 2);
          if c > u128::from(u64::MAX) {
              return None;
          }
      }
      Some(c as u64)
      """,
      ("3", "Some(5)"), ("37", "None"), ("0", "Some(1)"), ("5", "Some(42)"), ("10", "Some(16796)"),
      ("35", "Some(3116285494907301262)"), ("36", "Some(11959798385860453492)"), ("u32::MAX", "None")),
    T("queens_solutions", "n: u32", "u64", HARD, "recursion backtracking",
      r"""
      Counts the ways to place `n` queens on an `n` by `n` chessboard so that no two attack each other (no two
      share a row, a column or a diagonal). For `n = 0` there is exactly one arrangement, the empty one.
      `n` is at most 10.
      """,
      r"""
      fn place(row: usize, n: usize, cols: u64, diag: u64, anti: u64) -> u64 {
          if row == n {
              return 1;
          }
          let mut count = 0;
          for c in 0..n {
              let (d, a) = (row + c, row + n - 1 - c);
              if cols >> c & 1 == 0 && diag >> d & 1 == 0 && anti >> a & 1 == 0 {
                  count += place(row + 1, n, cols | 1 << c, diag | 1 << d, anti | 1 << a);
              }
          }
          count
      }
      place(0, n as usize, 0, 0, 0)
      """,
      ("4", "2"), ("3", "0"), ("0", "1"), ("1", "1"), ("2", "0"), ("6", "4"), ("8", "92")),
    T("can_segment", "text: &str, words: &[&str]", "bool", HARD, "dp string",
      r"""
      Tells whether `text` can be written as a concatenation of dictionary words, each usable any number of
      times. The empty text is the concatenation of zero words, so it gives `true`. Empty dictionary words are
      ignored. Works with non-ASCII text.
      """,
      r"""
      let bytes = text.as_bytes();
      let mut ok = vec![false; bytes.len() + 1];
      ok[0] = true;
      for end in 1..=bytes.len() {
          ok[end] = words.iter().any(|w| {
              !w.is_empty() && w.len() <= end && ok[end - w.len()] && bytes[..end].ends_with(w.as_bytes())
          });
      }
      ok[bytes.len()]
      """,
      ('"leetcode", &["leet", "code"]', "true"), ('"catsandog", &["cats", "dog", "sand", "and", "cat"]', "false"),
      ('"applepenapple", &["apple", "pen"]', "true"), ('"", &[]', "true"), ('"a", &[]', "false"),
      ('"aaaaaaa", &["aaa", "aaaa"]', "true"),
      ('"crème", &["cr", "ème"]', "true"), ('"ab", &["", "a"]', "false")),
    # ---------------------------------------------------------------- graphs
    T("shortest_path_len", "n: usize, edges: &[(usize, usize, u32)], start: usize, goal: usize", "Option<u64>", HARD,
      "graph dijkstra option",
      r"""
      Finds the length of the shortest path from `start` to `goal` in a directed graph with nodes `0..n` and
      weighted edges `(from, to, weight)` (parallel edges allowed). Returns `Some(0)` when `start == goal` and
      it is a valid node. Returns `None` when either node is not below `n` or `goal` cannot be reached; edges
      that mention a node not below `n` are ignored.
      """,
      r"""
      if start >= n || goal >= n {
          return None;
      }
      let mut adjacency: Vec<Vec<(usize, u64)>> = vec![Vec::new(); n];
      for &(from, to, weight) in edges {
          if from < n && to < n {
              adjacency[from].push((to, u64::from(weight)));
          }
      }
      let mut dist = vec![u64::MAX; n];
      let mut heap = BinaryHeap::new();
      dist[start] = 0;
      heap.push(Reverse((0u64, start)));
      while let Some(Reverse((d, node))) = heap.pop() {
          if node == goal {
              return Some(d);
          }
          if d > dist[node] {
              continue;
          }
          for &(next, w) in &adjacency[node] {
              if d + w < dist[next] {
                  dist[next] = d + w;
                  heap.push(Reverse((d + w, next)));
              }
          }
      }
      None
      """,
      ("4, &[(0, 1, 5), (0, 2, 1), (2, 1, 2), (1, 3, 1)], 0, 3", "Some(4)"), ("3, &[(0, 1, 1)], 0, 2", "None"),
      ("1, &[], 0, 0", "Some(0)"), ("2, &[(0, 1, 1)], 1, 0", "None"), ("2, &[(0, 1, 7)], 0, 5", "None"),
      ("3, &[(0, 1, 4), (0, 1, 2), (1, 2, 0), (0, 9, 1)], 0, 2", "Some(2)"),
      ("3, &[(0, 1, u32::MAX), (1, 2, u32::MAX)], 0, 2", "Some(8589934590)"),
      preamble="use std::cmp::Reverse;\nuse std::collections::BinaryHeap;"),
    T("topological_order", "n: usize, edges: &[(usize, usize)]", "Option<Vec<usize>>", HARD, "graph sorting option",
      r"""
      Returns an ordering of the nodes `0..n` in which every edge `(a, b)` has `a` before `b`. Whenever several
      nodes could come next, the smallest one goes first, so the answer is unique. Returns `None` if the edges
      contain a cycle (a self-loop counts). All edge endpoints are below `n`; duplicate edges may occur.
      """,
      r"""
      let mut indegree = vec![0usize; n];
      let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
      for &(a, b) in edges {
          next[a].push(b);
          indegree[b] += 1;
      }
      let mut ready: BinaryHeap<Reverse<usize>> = (0..n).filter(|&v| indegree[v] == 0).map(Reverse).collect();
      let mut order = Vec::with_capacity(n);
      while let Some(Reverse(v)) = ready.pop() {
          order.push(v);
          for &w in &next[v] {
              indegree[w] -= 1;
              if indegree[w] == 0 {
                  ready.push(Reverse(w));
              }
          }
      }
      if order.len() == n { Some(order) } else { None }
      """,
      ("4, &[(0, 1), (0, 2), (1, 3), (2, 3)]", "Some(vec![0, 1, 2, 3])"), ("2, &[(0, 1), (1, 0)]", "None"),
      ("3, &[]", "Some(vec![0, 1, 2])"), ("0, &[]", "Some(vec![])"), ("1, &[(0, 0)]", "None"),
      ("4, &[(3, 0), (2, 0), (1, 3)]", "Some(vec![1, 2, 3, 0])"), ("3, &[(2, 1), (2, 1)]", "Some(vec![0, 2, 1])"),
      preamble="use std::cmp::Reverse;\nuse std::collections::BinaryHeap;"),
    # ---------------------------------------------------------------- iterators and numbers
    T("every_nth", "values: &[i32], n: usize", "Vec<i32>", EASY, "iter",
      r"""
      Returns every `n`-th element, starting with the `n`-th one (index `n - 1`): indices `n - 1`, `2n - 1`, and
      so on. An `n` of 0 gives an empty vector.
      """,
      r"""
      if n == 0 {
          return Vec::new();
      }
      values.iter().skip(n - 1).step_by(n).copied().collect()
      """,
      ("&[1, 2, 3, 4, 5, 6, 7], 3", "vec![3, 6]"), ("&[9, 8], 2", "vec![8]"), ("&[1, 2], 0", "Vec::<i32>::new()"),
      ("&[], 2", "Vec::<i32>::new()"), ("&[1, 2, 3], 1", "vec![1, 2, 3]"), ("&[1, 2, 3], 4", "Vec::<i32>::new()")),
    T("moving_average", "values: &[f64], window: usize", "Vec<f64>", MEDIUM, "iter window float",
      r"""
      Returns the mean of every run of `window` consecutive values, in order, so a slice of length `n` gives
      `n - window + 1` means. A `window` of 0, or one longer than the slice, gives an empty vector.
      """,
      r"""
      if window == 0 {
          return Vec::new();
      }
      values.windows(window).map(|w| w.iter().sum::<f64>() / window as f64).collect()
      """,
      "let close = |a: Vec<f64>, b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9);",
      "assert!(close(moving_average(&[1.0, 2.0, 3.0, 4.0], 2), &[1.5, 2.5, 3.5]));",
      "assert!(close(moving_average(&[0.1, 0.2, 0.3, 0.4], 3), &[0.2, 0.3]));",
      "assert!(moving_average(&[], 1).is_empty());", "assert!(moving_average(&[1.0], 0).is_empty());",
      "assert!(moving_average(&[5.0], 2).is_empty());", "assert!(close(moving_average(&[-1.0, 1.0], 2), &[0.0]));",
      examples=("assert_eq!(moving_average(&[1.0, 2.0, 3.0, 4.0], 2), vec![1.5, 2.5, 3.5]);",
                "assert_eq!(moving_average(&[5.0], 2), Vec::<f64>::new());")),
    T("affordable_prefix", "costs: &[u32], budget: u64", "usize", EASY, "iter",
      r"""
      Returns how many items can be bought in order, starting from the first, before the running total of
      their costs would exceed `budget`: the length of the longest prefix whose sum is at most `budget`.
      """,
      r"""
      let mut total = 0u64;
      costs
          .iter()
          .take_while(|&&c| {
              total += u64::from(c);
              total <= budget
          })
          .count()
      """,
      ("&[5, 3, 8, 1], 10", "2"), ("&[0, 0, 4], 0", "2"), ("&[], 5", "0"), ("&[1, 2], 0", "0"), ("&[3, 3], 6", "2"),
      ("&[u32::MAX, u32::MAX], 2 * u64::from(u32::MAX)", "2")),
    T("summarize_ranges", "values: &[i32]", "Vec<String>", MEDIUM, "iter string",
      r"""
      Summarises a strictly increasing list of integers as ranges of consecutive values: a run `a, a+1, ..., b`
      with `b > a` becomes `"a->b"`, and a value with no neighbour in its run becomes `"a"`.
      """,
      r"""
      let mut out = Vec::new();
      let mut i = 0;
      while i < values.len() {
          let mut j = i;
          while j + 1 < values.len() && i64::from(values[j + 1]) == i64::from(values[j]) + 1 {
              j += 1;
          }
          out.push(if j == i { values[i].to_string() } else { format!("{}->{}", values[i], values[j]) });
          i = j + 1;
      }
      out
      """,
      ("&[0, 1, 2, 4, 5, 7]", 'vec!["0->2", "4->5", "7"]'), ("&[-3, -2, -1, 1]", 'vec!["-3->-1", "1"]'),
      ("&[]", "Vec::<String>::new()"),
      ("&[5]", 'vec!["5"]'), ("&[1, 3, 5]", 'vec!["1", "3", "5"]'),
      ("&[i32::MAX - 1, i32::MAX]", 'vec!["2147483646->2147483647"]')),
    T("median", "values: &[i32]", "Option<f64>", EASY, "sorting float option",
      r"""
      Returns the median of the values: the middle value once sorted, or the mean of the two middle values when
      the count is even (computed without overflow). Returns `None` for an empty slice. The input need not be
      sorted.
      """,
      r"""
      let mut sorted = values.to_vec();
      sorted.sort_unstable();
      let n = sorted.len();
      if n == 0 {
          return None;
      }
      let middle = f64::from(sorted[n / 2]);
      Some(if n % 2 == 1 { middle } else { (f64::from(sorted[n / 2 - 1]) + middle) / 2.0 })
      """,
      "let close = |r: Option<f64>, e: f64| r.map_or(false, |x| (x - e).abs() < 1e-9);",
      "assert!(close(median(&[3, 1, 2]), 2.0));", "assert!(close(median(&[4, 1, 3, 2]), 2.5));",
      "assert_eq!(median(&[]), None);",
      "assert!(close(median(&[-5]), -5.0));", "assert!(close(median(&[i32::MAX, i32::MAX]), 2147483647.0));",
      "assert!(close(median(&[7, 7, 1, 100]), 7.0));",
      examples=("assert_eq!(median(&[3, 1, 2]), Some(2.0));", "assert_eq!(median(&[4, 1, 3, 2]), Some(2.5));")),
    T("std_deviation", "values: &[f64]", "Option<f64>", EASY, "float option",
      r"""
      Returns the population standard deviation of the values: the square root of the mean of the squared
      distances from the mean. Returns `None` for an empty slice.
      """,
      r"""
      if values.is_empty() {
          return None;
      }
      let n = values.len() as f64;
      let mean = values.iter().sum::<f64>() / n;
      Some((values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt())
      """,
      "let close = |r: Option<f64>, e: f64| r.map_or(false, |x| (x - e).abs() < 1e-9);",
      "assert!(close(std_deviation(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]), 2.0));",
      "assert_eq!(std_deviation(&[]), None);",
      "assert!(close(std_deviation(&[5.0]), 0.0));",
      "assert!(close(std_deviation(&[1.0, 2.0, 3.0, 4.0]), 1.25f64.sqrt()));",
      "assert!(close(std_deviation(&[-1.0, 1.0]), 1.0));",
      examples=("assert_eq!(std_deviation(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]), Some(2.0));",
                "assert_eq!(std_deviation(&[]), None);")),
    T("eval_polynomial", "coeffs: &[i64], x: i64", "i64", EASY, "math iter",
      r"""
      Evaluates at `x` the polynomial whose coefficient of `x^i` is `coeffs[i]` (constant term first). An empty
      list of coefficients is the zero polynomial.
      """,
      r"""
      coeffs.iter().rev().fold(0, |acc, &c| acc * x + c)
      """,
      ("&[1, 2, 3], 2", "17"), ("&[0, 0, 1], -3", "9"), ("&[], 5", "0"), ("&[7], 100", "7"), ("&[-1, 1], 1", "0"),
      ("&[2, 0, 0, 1], 0", "2")),
    T("pairwise_gaps", "values: &[i32]", "Vec<i64>", EASY, "iter window",
      r"""
      Returns the gaps between neighbours: element `i` of the result is `values[i + 1] - values[i]`, computed as
      `i64` so it cannot overflow. Slices with fewer than two values give an empty vector.
      """,
      r"""
      values.windows(2).map(|w| i64::from(w[1]) - i64::from(w[0])).collect()
      """,
      ("&[1, 4, 9, 16]", "vec![3, 5, 7]"), ("&[3, 1]", "vec![-2]"), ("&[]", "Vec::<i64>::new()"),
      ("&[5]", "Vec::<i64>::new()"),
      ("&[i32::MIN, i32::MAX]", "vec![4294967295]")),
    T("cumulative_product_until", "values: &[u64], limit: u64", "Vec<u64>", MEDIUM, "iter overflow",
      r"""
      Returns the running products of the values (element `i` is `values[0] * ... * values[i]`), stopping
      before the first product that would exceed `limit` or overflow `u64`; everything from there on is left
      out.
      """,
      r"""
      let mut product = 1u64;
      let mut out = Vec::new();
      for &v in values {
          match product.checked_mul(v) {
              Some(p) if p <= limit => {
                  product = p;
                  out.push(p);
              }
              _ => break,
          }
      }
      out
      """,
      ("&[2, 3, 4, 5], 100", "vec![2, 6, 24]"), ("&[0, 5], 0", "vec![0, 0]"), ("&[], 10", "Vec::<u64>::new()"),
      ("&[11], 10", "Vec::<u64>::new()"), ("&[u64::MAX, 2], u64::MAX", "vec![u64::MAX]"),
      ("&[2, 3, 1], 6", "vec![2, 6, 6]")),
]
