"""pass@k: the chance that at least one of k samples of a task passes, estimated without bias from n >= k samples
of which c passed (Chen et al. 2021, the HumanEval paper): 1 - C(n - c, k) / C(n, k) per task, averaged over tasks.

The product form below is the paper's numerically stable one; with fewer than k failures (n - c < k) every
k-subset holds a pass, so the estimate is exactly 1.
"""

from __future__ import annotations

from typing import Dict, Iterable, Sequence, Tuple


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task from n samples with c correct (k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    estimate = 1.0
    for i in range(n - c + 1, n + 1):
        estimate *= 1.0 - k / i
    return 1.0 - estimate


def mean_pass_at_k(counts: Iterable[Tuple[int, int]], ks: Sequence[int]) -> Dict[str, float]:
    """{"pass@k": mean over tasks} for each k, from (n, c) per task."""
    counts = list(counts)
    if not counts:
        return {f"pass@{k}": 0.0 for k in ks}
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in ks}
