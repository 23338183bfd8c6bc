"""Generate the bundled offline Rust corpus (`data=rust_sample`).

The corpus is what `python -m rtune train` trains on with no network: Rust source files in the
record layout of `bigcode/the-stack-smol` (`content`, `path`, `repository_name`, `size`, `lang`,
`ext`, `licenses`, `avg_line_length`, `max_line_length`, `alphanum_fraction`), one JSON object a line
under `data/rust/data.json` -- the same directory shape as the hub repo, so the same
`load_dataset(path, data_dir="data/rust")` call reads both.

Every file is composed from hand-written, idiomatic std-only Rust templates (structs and impls,
enums with `match`, error types, traits and generics, iterators, parsers, state machines,
collections, operator overloading, graph search, lifetimes, unit tests), instantiated for one of a
dozen domains and shuffled with a fixed seed. Each generated file compiles with
`rustc --edition 2021 --crate-type lib` (run this script with `--check` to verify).

    python scripts/data/make_rust_sample.py            # writes rtune/sample_data/rust_sample/...
    python scripts/data/make_rust_sample.py --check    # also compiles every file with rustc
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
from pathlib import Path
from string import Template

OUT = Path(__file__).resolve().parents[2] / "rtune/sample_data/rust_sample/data/rust/data.json"

# (entity, module, [(field, type, literal-maker)]) -- the first field is the key, the second a
# String label, the third a number, the fourth a bool; templates rely on that order.
DOMAINS = [
    ("Sensor", "telemetry", [("id", "u32"), ("label", "String"), ("reading", "f64"), ("active", "bool")]),
    ("Order", "shop", [("id", "u64"), ("customer", "String"), ("total_cents", "i64"), ("shipped", "bool")]),
    ("Account", "ledger", [("number", "u64"), ("owner", "String"), ("balance_cents", "i64"), ("frozen", "bool")]),
    ("Track", "playlist", [("id", "u32"), ("title", "String"), ("duration_ms", "u64"), ("explicit", "bool")]),
    ("Task", "planner", [("id", "u32"), ("title", "String"), ("priority", "u8"), ("done", "bool")]),
    ("Book", "library", [("id", "u32"), ("title", "String"), ("pages", "u32"), ("available", "bool")]),
    ("Vehicle", "fleet", [("id", "u32"), ("model", "String"), ("mileage_km", "u32"), ("electric", "bool")]),
    ("Employee", "payroll", [("id", "u32"), ("name", "String"), ("salary", "u32"), ("remote", "bool")]),
    ("Request", "gateway", [("id", "u64"), ("path", "String"), ("latency_us", "u64"), ("ok", "bool")]),
    ("Recipe", "kitchen", [("id", "u16"), ("name", "String"), ("minutes", "u16"), ("vegan", "bool")]),
    ("Shipment", "logistics", [("id", "u64"), ("carrier", "String"), ("weight_g", "u32"), ("insured", "bool")]),
    ("Ticket", "helpdesk", [("id", "u32"), ("subject", "String"), ("severity", "u8"), ("open", "bool")]),
]
WORDS = ["alpha", "basil", "cedar", "delta", "ember", "fjord", "gamma", "harbor", "iris", "juniper",
         "kestrel", "lumen", "maple", "nova", "onyx", "pine", "quartz", "raven", "sierra", "tundra"]
ORGS = ["acme", "tidewater", "northwind", "bluefin", "copperleaf", "lattice", "ironbark", "quill"]


def number_literal(ty: str, rng: random.Random) -> str:
    if ty == "f64":
        return f"{rng.uniform(-40, 120):.2f}"
    hi = {"u8": 9, "u16": 900, "u32": 90000, "u64": 9000000, "i64": 250000}[ty]
    return str(rng.randint(1, hi))


def snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


TEMPLATES: dict[str, str] = {}

TEMPLATES["struct"] = r'''
/// A single ${lower} record as it is stored and exchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct ${E} {
    pub ${k}: ${kt},
    pub ${s}: String,
    pub ${n}: ${nt},
    pub ${b}: bool,
}

impl ${E} {
    /// Creates a new ${lower}; the ${b} flag starts out `${bdef}`.
    pub fn new(${k}: ${kt}, ${s}: impl Into<String>, ${n}: ${nt}) -> Self {
        Self {
            ${k},
            ${s}: ${s}.into(),
            ${n},
            ${b}: ${bdef},
        }
    }

    pub fn with_${b}(mut self, value: bool) -> Self {
        self.${b} = value;
        self
    }

    /// Returns true when the ${s} is non-empty and not only whitespace.
    pub fn has_${s}(&self) -> bool {
        !self.${s}.trim().is_empty()
    }

    pub fn describe(&self) -> String {
        format!("{} #{} ({}): {}", "${E}", self.${k}, self.${s}, self.${n})
    }
}
'''

TEMPLATES["enum"] = r'''
/// Where a ${lower} is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ${E}Status {
    ${v0},
    ${v1},
    ${v2},
    ${v3},
}

impl ${E}Status {
    pub const ALL: [${E}Status; 4] = [
        ${E}Status::${v0},
        ${E}Status::${v1},
        ${E}Status::${v2},
        ${E}Status::${v3},
    ];

    /// The status that follows this one, or `None` when the ${lower} is finished.
    pub fn next(self) -> Option<${E}Status> {
        match self {
            ${E}Status::${v0} => Some(${E}Status::${v1}),
            ${E}Status::${v1} => Some(${E}Status::${v2}),
            ${E}Status::${v2} => Some(${E}Status::${v3}),
            ${E}Status::${v3} => None,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, ${E}Status::${v3})
    }
}

impl std::fmt::Display for ${E}Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            ${E}Status::${v0} => "${v0l}",
            ${E}Status::${v1} => "${v1l}",
            ${E}Status::${v2} => "${v2l}",
            ${E}Status::${v3} => "${v3l}",
        };
        write!(f, "{}", text)
    }
}

impl std::str::FromStr for ${E}Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ${E}Status::ALL
            .iter()
            .copied()
            .find(|status| status.to_string() == s.trim().to_lowercase())
            .ok_or_else(|| format!("unknown ${lower} status: {:?}", s))
    }
}
'''

TEMPLATES["error"] = r'''
/// Everything that can go wrong while loading ${lower} records.
#[derive(Debug)]
pub enum ${E}Error {
    Io(std::io::Error),
    Parse { line: usize, message: String },
    Missing(&'static str),
    Duplicate(${kt}),
}

impl std::fmt::Display for ${E}Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ${E}Error::Io(err) => write!(f, "i/o error: {}", err),
            ${E}Error::Parse { line, message } => write!(f, "line {}: {}", line, message),
            ${E}Error::Missing(field) => write!(f, "missing field `{}`", field),
            ${E}Error::Duplicate(key) => write!(f, "duplicate ${k} {}", key),
        }
    }
}

impl std::error::Error for ${E}Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ${E}Error::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ${E}Error {
    fn from(err: std::io::Error) -> Self {
        ${E}Error::Io(err)
    }
}

pub type ${E}Result<T> = Result<T, ${E}Error>;
'''

TEMPLATES["parser"] = r'''
/// Parses `key=value` lines into a map. Blank lines and `#` comments are skipped.
pub fn parse_${lower}_fields(input: &str) -> Result<std::collections::HashMap<String, String>, String> {
    let mut fields = std::collections::HashMap::new();
    for (index, raw) in input.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected key=value, got {:?}", index + 1, line))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("line {}: empty key", index + 1));
        }
        if fields.insert(key.to_string(), value.trim().to_string()).is_some() {
            return Err(format!("line {}: duplicate key {:?}", index + 1, key));
        }
    }
    Ok(fields)
}

/// Reads one `${n}` value, accepting `_` as a digit separator.
pub fn parse_${n}(text: &str) -> Option<${nt}> {
    let cleaned: String = text.chars().filter(|c| *c != '_').collect();
    cleaned.parse::<${nt}>().ok()
}
'''

TEMPLATES["trait"] = r'''
/// Anything that can be scored for ranking in the ${mod} view.
pub trait Scored {
    fn score(&self) -> f64;

    fn is_better_than(&self, other: &dyn Scored) -> bool {
        self.score() > other.score()
    }
}

#[derive(Debug, Clone)]
pub struct Weighted${E} {
    pub weight: f64,
    pub base: f64,
}

impl Scored for Weighted${E} {
    fn score(&self) -> f64 {
        self.weight * self.base
    }
}

impl Scored for (${kt}, f64) {
    fn score(&self) -> f64 {
        self.1
    }
}

/// Returns the index of the highest-scoring item, or `None` for an empty slice.
pub fn best_index<T: Scored>(items: &[T]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, item) in items.iter().enumerate() {
        let s = item.score();
        match best {
            Some((_, top)) if top >= s => {}
            _ => best = Some((i, s)),
        }
    }
    best.map(|(i, _)| i)
}
'''

TEMPLATES["iterator"] = r'''
/// Yields fixed-size windows of ${lower} ids, advancing by `step` each time.
pub struct ${E}Windows<'a> {
    ids: &'a [${kt}],
    size: usize,
    step: usize,
    start: usize,
}

impl<'a> ${E}Windows<'a> {
    pub fn new(ids: &'a [${kt}], size: usize, step: usize) -> Self {
        assert!(size > 0 && step > 0, "size and step must be positive");
        Self { ids, size, step, start: 0 }
    }
}

impl<'a> Iterator for ${E}Windows<'a> {
    type Item = &'a [${kt}];

    fn next(&mut self) -> Option<Self::Item> {
        let end = self.start.checked_add(self.size)?;
        if end > self.ids.len() {
            return None;
        }
        let window = &self.ids[self.start..end];
        self.start += self.step;
        Some(window)
    }
}

pub fn running_totals(values: &[${nt}]) -> Vec<${nt}> {
    values
        .iter()
        .scan(${nzero}, |acc, v| {
            *acc += *v;
            Some(*acc)
        })
        .collect()
}
'''

TEMPLATES["store"] = r'''
use std::collections::HashMap;

/// An in-memory index of ${lower} records keyed by `${k}`.
#[derive(Debug, Default)]
pub struct ${E}Store {
    by_${k}: HashMap<${kt}, (String, ${nt}, bool)>,
    inserts: usize,
}

impl ${E}Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces a record; returns the previous ${s} if there was one.
    pub fn upsert(&mut self, ${k}: ${kt}, ${s}: &str, ${n}: ${nt}) -> Option<String> {
        self.inserts += 1;
        self.by_${k}
            .insert(${k}, (${s}.to_string(), ${n}, false))
            .map(|(old, _, _)| old)
    }

    pub fn mark(&mut self, ${k}: ${kt}) -> bool {
        match self.by_${k}.get_mut(&${k}) {
            Some(entry) => {
                entry.2 = true;
                true
            }
            None => false,
        }
    }

    pub fn total_${n}(&self) -> ${nt} {
        self.by_${k}.values().map(|(_, v, _)| *v).sum()
    }

    /// The ${s}s of all marked records, sorted for stable output.
    pub fn marked(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .by_${k}
            .values()
            .filter(|(_, _, flag)| *flag)
            .map(|(name, _, _)| name.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    pub fn len(&self) -> usize {
        self.by_${k}.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_${k}.is_empty()
    }
}
'''

TEMPLATES["state"] = r'''
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ${E}State {
    Idle,
    Running { since_tick: u64 },
    Paused { remaining: u32 },
    Stopped,
}

#[derive(Debug, Clone, Copy)]
pub enum ${E}Event {
    Start(u64),
    Pause(u32),
    Resume,
    Tick,
    Stop,
}

/// Applies one event; events that make no sense in the current state leave it unchanged.
pub fn step_${lower}(state: ${E}State, event: ${E}Event) -> ${E}State {
    use ${E}Event::*;
    use ${E}State::*;
    match (state, event) {
        (Idle, Start(tick)) => Running { since_tick: tick },
        (Running { .. }, Pause(n)) if n > 0 => Paused { remaining: n },
        (Paused { remaining }, Tick) if remaining > 1 => Paused { remaining: remaining - 1 },
        (Paused { .. }, Tick) | (Paused { .. }, Resume) => Running { since_tick: 0 },
        (_, Stop) => Stopped,
        (current, _) => current,
    }
}

pub fn replay_${lower}(events: &[${E}Event]) -> ${E}State {
    events.iter().fold(${E}State::Idle, |state, event| step_${lower}(state, *event))
}
'''

TEMPLATES["ring"] = r'''
/// A fixed-capacity ring buffer that overwrites the oldest ${lower} sample when full.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    slots: Vec<Option<T>>,
    head: usize,
    len: usize,
}

impl<T: Clone> Ring<T> {
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        Self { slots: vec![None; capacity], head: 0, len: 0 }
    }

    pub fn push(&mut self, value: T) -> Option<T> {
        let capacity = self.slots.len();
        let index = (self.head + self.len) % capacity;
        if self.len == capacity {
            let evicted = self.slots[self.head].replace(value);
            self.head = (self.head + 1) % capacity;
            evicted
        } else {
            self.slots[index] = Some(value);
            self.len += 1;
            None
        }
    }

    pub fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let value = self.slots[self.head].take();
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        value
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        (0..self.len).filter_map(move |i| self.slots[(self.head + i) % self.slots.len()].as_ref())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
'''

TEMPLATES["vector"] = r'''
use std::ops::{Add, Mul, Sub};

/// A 2-D position used to lay out ${lower} markers on the ${mod} map.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    pub const ORIGIN: Point = Point { x: 0.0, y: 0.0 };

    pub fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }

    pub fn length(self) -> f64 {
        (self.x * self.x + self.y * self.y).sqrt()
    }

    pub fn distance(self, other: Point) -> f64 {
        (self - other).length()
    }
}

impl Add for Point {
    type Output = Point;
    fn add(self, rhs: Point) -> Point {
        Point::new(self.x + rhs.x, self.y + rhs.y)
    }
}

impl Sub for Point {
    type Output = Point;
    fn sub(self, rhs: Point) -> Point {
        Point::new(self.x - rhs.x, self.y - rhs.y)
    }
}

impl Mul<f64> for Point {
    type Output = Point;
    fn mul(self, k: f64) -> Point {
        Point::new(self.x * k, self.y * k)
    }
}

/// The centroid of a non-empty set of points.
pub fn centroid(points: &[Point]) -> Option<Point> {
    if points.is_empty() {
        return None;
    }
    let sum = points.iter().fold(Point::ORIGIN, |acc, p| acc + *p);
    Some(sum * (1.0 / points.len() as f64))
}
'''

TEMPLATES["search"] = r'''
/// Binary search over ${lower} ids sorted ascending; returns the insertion point on a miss.
pub fn find_${k}(sorted: &[${kt}], target: ${kt}) -> Result<usize, usize> {
    let (mut lo, mut hi) = (0usize, sorted.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match sorted[mid].cmp(&target) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(mid),
        }
    }
    Err(lo)
}

/// Stable insertion sort; fine for the short batches the ${mod} service handles.
pub fn insertion_sort<T: PartialOrd + Copy>(values: &mut [T]) {
    for i in 1..values.len() {
        let current = values[i];
        let mut j = i;
        while j > 0 && values[j - 1] > current {
            values[j] = values[j - 1];
            j -= 1;
        }
        values[j] = current;
    }
}

pub fn dedup_sorted(values: &mut Vec<${kt}>) -> usize {
    let before = values.len();
    values.dedup();
    before - values.len()
}
'''

TEMPLATES["graph"] = r'''
use std::collections::{HashMap, HashSet, VecDeque};

/// Directed dependencies between ${lower} records.
#[derive(Debug, Default)]
pub struct DependencyGraph {
    edges: HashMap<${kt}, Vec<${kt}>>,
}

impl DependencyGraph {
    pub fn add_edge(&mut self, from: ${kt}, to: ${kt}) {
        self.edges.entry(from).or_default().push(to);
        self.edges.entry(to).or_default();
    }

    /// Breadth-first order of everything reachable from `start`.
    pub fn reachable(&self, start: ${kt}) -> Vec<${kt}> {
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([start]);
        let mut order = Vec::new();
        while let Some(node) = queue.pop_front() {
            if !seen.insert(node) {
                continue;
            }
            order.push(node);
            for next in self.edges.get(&node).into_iter().flatten() {
                if !seen.contains(next) {
                    queue.push_back(*next);
                }
            }
        }
        order
    }

    /// Kahn's algorithm; `None` when the graph has a cycle.
    pub fn topological_order(&self) -> Option<Vec<${kt}>> {
        let mut indegree: HashMap<${kt}, usize> = self.edges.keys().map(|k| (*k, 0)).collect();
        for targets in self.edges.values() {
            for t in targets {
                *indegree.entry(*t).or_default() += 1;
            }
        }
        let mut ready: Vec<${kt}> = indegree.iter().filter(|(_, d)| **d == 0).map(|(k, _)| *k).collect();
        ready.sort_unstable();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(node) = ready.pop() {
            order.push(node);
            for t in self.edges.get(&node).into_iter().flatten() {
                let d = indegree.get_mut(t).expect("every target has an entry");
                *d -= 1;
                if *d == 0 {
                    ready.push(*t);
                }
            }
        }
        (order.len() == indegree.len()).then_some(order)
    }
}
'''

TEMPLATES["words"] = r'''
/// Splits a free-text ${s} into lowercase words, borrowing from the input where possible.
pub struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    pub fn new(text: &'a str) -> Self {
        Self { rest: text }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let trimmed = self.rest.trim_start_matches(|c: char| !c.is_alphanumeric());
        if trimmed.is_empty() {
            return None;
        }
        let end = trimmed.find(|c: char| !c.is_alphanumeric()).unwrap_or(trimmed.len());
        let (word, rest) = trimmed.split_at(end);
        self.rest = rest;
        Some(word)
    }
}

/// Counts words case-insensitively and returns the `n` most frequent, ties broken alphabetically.
pub fn top_words(text: &str, n: usize) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for word in Words::new(text) {
        *counts.entry(word.to_lowercase()).or_insert(0usize) += 1;
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(n);
    ranked
}
'''

TEMPLATES["config"] = r'''
/// Settings for the ${mod} worker; `Default` gives the values used in production.
#[derive(Debug, Clone, PartialEq)]
pub struct ${E}Config {
    pub batch_size: usize,
    pub retry_limit: u32,
    pub timeout_ms: u64,
    pub endpoint: String,
    pub verbose: bool,
}

impl Default for ${E}Config {
    fn default() -> Self {
        Self {
            batch_size: ${batch},
            retry_limit: ${retries},
            timeout_ms: ${timeout},
            endpoint: String::from("http://127.0.0.1:${port}/${mod}"),
            verbose: false,
        }
    }
}

impl ${E}Config {
    /// Applies `KEY=VALUE` overrides, rejecting unknown keys so typos do not go unnoticed.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "batch_size" => self.batch_size = value.parse().map_err(|e| format!("batch_size: {}", e))?,
            "retry_limit" => self.retry_limit = value.parse().map_err(|e| format!("retry_limit: {}", e))?,
            "timeout_ms" => self.timeout_ms = value.parse().map_err(|e| format!("timeout_ms: {}", e))?,
            "endpoint" => self.endpoint = value.to_string(),
            "verbose" => self.verbose = matches!(value, "1" | "true" | "yes"),
            other => return Err(format!("unknown setting {:?}", other)),
        }
        Ok(())
    }

    /// Exponential back-off for attempt `n`, capped at the timeout.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let base: u64 = 50;
        base.saturating_mul(1u64 << attempt.min(16)).min(self.timeout_ms)
    }
}
'''

TEMPLATES["stats"] = r'''
/// Summary statistics over a batch of ${lower} `${n}` values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std_dev: f64,
}

pub fn summarize(values: &[${nt}]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let xs: Vec<f64> = values.iter().map(|v| *v as f64).collect();
    let count = xs.len();
    let mean = xs.iter().sum::<f64>() / count as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / count as f64;
    let min = xs.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    Some(Summary { count, min, max, mean, std_dev: var.sqrt() })
}

/// The value at quantile `q` (0.0..=1.0) using nearest-rank on a sorted copy.
pub fn quantile(values: &[${nt}], q: f64) -> Option<${nt}> {
    if values.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}
'''

TEMPLATES["main"] = r'''
use std::env;
use std::process::ExitCode;

fn usage(program: &str) -> String {
    format!("usage: {} <${lower}-file> [--limit N] [--verbose]", program)
}

/// Command-line entry point for the ${mod} tool.
pub fn run(args: Vec<String>) -> Result<(), String> {
    let program = args.first().cloned().unwrap_or_else(|| "${mod}".to_string());
    let mut path: Option<String> = None;
    let mut limit = usize::MAX;
    let mut verbose = false;
    let mut iter = args.into_iter().skip(1);
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--limit" => {
                let value = iter.next().ok_or("--limit needs a value")?;
                limit = value.parse().map_err(|_| format!("bad limit: {}", value))?;
            }
            "--verbose" | "-v" => verbose = true,
            "--help" | "-h" => {
                println!("{}", usage(&program));
                return Ok(());
            }
            _ if path.is_none() => path = Some(arg),
            other => return Err(format!("unexpected argument {:?}\n{}", other, usage(&program))),
        }
    }
    let path = path.ok_or_else(|| usage(&program))?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {}", path, e))?;
    for (i, line) in text.lines().take(limit).enumerate() {
        if verbose {
            eprintln!("[{}] {}", i + 1, line);
        }
        println!("{}", line.trim());
    }
    Ok(())
}

pub fn main_entry() -> ExitCode {
    match run(env::args().collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {}", message);
            ExitCode::FAILURE
        }
    }
}
'''

TEMPLATES["money"] = r'''
/// An amount in the smallest currency unit; arithmetic never silently overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cents(pub i64);

impl Cents {
    pub fn checked_add(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).map(Cents)
    }

    /// Splits the amount into `parts` shares that differ by at most one cent.
    pub fn split(self, parts: u32) -> Vec<Cents> {
        if parts == 0 {
            return Vec::new();
        }
        let n = parts as i64;
        let (base, extra) = (self.0 / n, self.0 % n);
        (0..n).map(|i| Cents(base + if i < extra { 1 } else { 0 })).collect()
    }
}

impl std::fmt::Display for Cents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{}{}.{:02}", sign, abs / 100, abs % 100)
    }
}
'''

TESTS = r'''
#[cfg(test)]
mod tests {
    use super::*;
${cases}
}
'''

TEST_CASES = {
    "struct": r'''
    #[test]
    fn new_${lower}_has_defaults() {
        let item = ${E}::new(${kv}, "${word}", ${nv});
        assert_eq!(item.${k}, ${kv});
        assert!(item.has_${s}());
        assert_eq!(item.${b}, ${bdef});
        assert!(item.describe().contains("${word}"));
    }
''',
    "enum": r'''
    #[test]
    fn status_round_trips_through_text() {
        for status in ${E}Status::ALL {
            let parsed: ${E}Status = status.to_string().parse().unwrap();
            assert_eq!(parsed, status);
        }
        assert!(${E}Status::${v3}.is_terminal());
        assert_eq!(${E}Status::${v0}.next(), Some(${E}Status::${v1}));
    }
''',
    "parser": r'''
    #[test]
    fn parses_fields_and_rejects_duplicates() {
        let fields = parse_${lower}_fields("# header\n${s} = ${word}\n\n${n}=${nv}\n").unwrap();
        assert_eq!(fields["${s}"], "${word}");
        assert!(parse_${lower}_fields("a=1\na=2").is_err());
        assert!(parse_${lower}_fields("no separator").is_err());
    }
''',
    "store": r'''
    #[test]
    fn store_upserts_and_marks() {
        let mut store = ${E}Store::new();
        assert!(store.upsert(${kv}, "${word}", ${nv}).is_none());
        assert_eq!(store.upsert(${kv}, "${word2}", ${nv}).as_deref(), Some("${word}"));
        assert!(store.mark(${kv}));
        assert_eq!(store.marked(), vec!["${word2}"]);
        assert_eq!(store.len(), 1);
    }
''',
    "state": r'''
    #[test]
    fn pause_counts_down_then_resumes() {
        let events = [${E}Event::Start(7), ${E}Event::Pause(2), ${E}Event::Tick, ${E}Event::Tick];
        assert_eq!(replay_${lower}(&events), ${E}State::Running { since_tick: 0 });
        assert_eq!(step_${lower}(${E}State::Idle, ${E}Event::Stop), ${E}State::Stopped);
    }
''',
    "ring": r'''
    #[test]
    fn ring_overwrites_oldest() {
        let mut ring = Ring::with_capacity(2);
        assert_eq!(ring.push(1), None);
        assert_eq!(ring.push(2), None);
        assert_eq!(ring.push(3), Some(1));
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(ring.pop_front(), Some(2));
    }
''',
    "search": r'''
    #[test]
    fn finds_and_inserts() {
        let ids: Vec<${kt}> = vec![2, 4, 6, 8];
        assert_eq!(find_${k}(&ids, 6), Ok(2));
        assert_eq!(find_${k}(&ids, 5), Err(2));
        let mut xs = [5, 1, 4, 2];
        insertion_sort(&mut xs);
        assert_eq!(xs, [1, 2, 4, 5]);
    }
''',
    "graph": r'''
    #[test]
    fn detects_cycles() {
        let mut graph = DependencyGraph::default();
        graph.add_edge(1, 2);
        graph.add_edge(2, 3);
        assert_eq!(graph.reachable(1), vec![1, 2, 3]);
        assert!(graph.topological_order().is_some());
        graph.add_edge(3, 1);
        assert!(graph.topological_order().is_none());
    }
''',
    "words": r'''
    #[test]
    fn counts_words_case_insensitively() {
        let top = top_words("${Word} ${word}, ${word2}!", 1);
        assert_eq!(top, vec![("${word}".to_string(), 2)]);
    }
''',
    "vector": r'''
    #[test]
    fn centroid_of_square() {
        let pts = [Point::new(0.0, 0.0), Point::new(2.0, 0.0), Point::new(2.0, 2.0), Point::new(0.0, 2.0)];
        assert_eq!(centroid(&pts), Some(Point::new(1.0, 1.0)));
        assert!(centroid(&[]).is_none());
    }
''',
    "money": r'''
    #[test]
    fn split_distributes_remainder() {
        let shares = Cents(${cents}).split(3);
        assert_eq!(shares.iter().map(|c| c.0).sum::<i64>(), ${cents});
        assert_eq!(Cents(-1234).to_string(), "-12.34");
    }
''',
    "config": r'''
    #[test]
    fn config_rejects_unknown_keys() {
        let mut cfg = ${E}Config::default();
        cfg.apply("batch_size", "64").unwrap();
        assert_eq!(cfg.batch_size, 64);
        assert!(cfg.apply("bogus", "1").is_err());
        assert!(cfg.backoff_ms(30) <= cfg.timeout_ms);
    }
''',
}

STATUS_WORDS = [("Pending", "Active", "Suspended", "Closed"), ("Draft", "Review", "Approved", "Archived"),
                ("Queued", "Running", "Blocked", "Finished"), ("New", "Assigned", "Escalated", "Resolved")]


def render_file(rng: random.Random, domain, index: int) -> tuple[str, str]:
    entity, mod, fields = domain
    (k, kt), (s, _), (n, nt), (b, _) = fields
    v = rng.choice(STATUS_WORDS)
    word, word2 = rng.sample(WORDS, 2)
    nv = number_literal(nt, rng)
    if nt != "f64" and "." in nv:
        nv = nv.split(".")[0]
    subs = dict(
        E=entity, lower=snake(entity), mod=mod, k=k, kt=kt, s=s, n=n, nt=nt, b=b,
        bdef=rng.choice(["false", "true"]), kv=str(rng.randint(1, 200)), nv=nv,
        nzero="0.0" if nt == "f64" else "0", word=word, word2=word2, Word=word.capitalize(),
        v0=v[0], v1=v[1], v2=v[2], v3=v[3], v0l=v[0].lower(), v1l=v[1].lower(),
        v2l=v[2].lower(), v3l=v[3].lower(), batch=str(rng.choice([16, 32, 64, 128])),
        retries=str(rng.randint(2, 8)), timeout=str(rng.choice([500, 1500, 3000, 10000])),
        port=str(rng.randint(8000, 9900)), cents=str(rng.randint(100, 99999)),
    )
    chosen = rng.sample(list(TEMPLATES), rng.randint(4, 7))
    # The store and graph templates both import HashMap; keep one `use` per file.
    if "store" in chosen and "graph" in chosen:
        chosen.remove("graph")
    header = f"//! {entity} {rng.choice(['utilities', 'core types', 'helpers', 'domain model', 'service logic'])} " \
             f"for the `{mod}` crate.\n//!\n//! Part {index} of the {mod} module set.\n"
    body = [Template(TEMPLATES[c]).substitute(subs) for c in chosen]
    cases = [Template(TEST_CASES[c]).substitute(subs) for c in chosen if c in TEST_CASES]
    text = header + "".join(body)
    if cases:
        text += Template(TESTS).substitute(cases="".join(cases).rstrip("\n"))
    # A `use` inside a template must precede items: hoist them to the top of the file.
    lines = text.splitlines()
    uses = sorted({ln for ln in lines if ln.startswith("use std::")})
    rest = [ln for ln in lines if not ln.startswith("use std::")]
    head_end = next(i for i, ln in enumerate(rest) if not ln.startswith("//!"))
    text = "\n".join(rest[:head_end] + [""] + uses + rest[head_end:]) + "\n"
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    path = f"src/{mod}/{snake(entity)}_{'_'.join(sorted(chosen)[:2])}_{index}.rs"
    return text, path


def record(content: str, path: str, repo: str) -> dict:
    lines = content.splitlines() or [""]
    return {
        "content": content,
        "avg_line_length": round(sum(map(len, lines)) / len(lines), 3),
        "max_line_length": max(map(len, lines)),
        "alphanum_fraction": round(sum(c.isalnum() for c in content) / max(len(content), 1), 4),
        "licenses": ["MIT"],
        "repository_name": repo,
        "path": path,
        "size": len(content.encode()),
        "lang": "Rust",
    }


def build(min_bytes: int = 220_000, seed: int = 2026) -> list[dict]:
    rng = random.Random(seed)
    records, total, index = [], 0, 0
    while total < min_bytes:
        domain = DOMAINS[index % len(DOMAINS)]
        content, path = render_file(rng, domain, index)
        repo = f"{rng.choice(ORGS)}/{domain[1]}-rs"
        records.append(record(content, path, repo))
        total += len(content.encode())
        index += 1
    return records


def check_compiles(records: list[dict]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for i, rec in enumerate(records):
            src = Path(tmp) / f"f{i}.rs"
            src.write_text(rec["content"])
            for extra in ([], ["--test"]):
                proc = subprocess.run(
                    ["rustc", "--edition", "2021", "--crate-type", "lib", "-A", "warnings",
                     "--emit", "metadata", "-o", str(Path(tmp) / f"f{i}.rmeta"), *extra, str(src)],
                    capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{rec['path']} does not compile:\n{proc.stderr[:3000]}")
    print(f"all {len(records)} files compile (lib and --test)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compile every file with rustc")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    records = build()
    if args.check:
        check_compiles(records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    print(f"wrote {len(records)} files, {sum(r['size'] for r in records)} bytes to {args.out}")


if __name__ == "__main__":
    main()
