"""This process's resident memory: now, and its peak since a reset (Linux /proc; elsewhere the OS maximum).

The workers report their peaks in the summary; the benchmarks measure the driver with the same functions.
"""

from __future__ import annotations

from typing import Optional


def reset_peak_rss() -> None:
    """Restart this process's resident-set high-water mark (Linux: writing 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _status_mb(field: str) -> Optional[float]:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MB; None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """This process's resident set now (0 where /proc is missing)."""
    return _status_mb("VmRSS") or 0.0


def peak_rss_mb() -> float:
    """Peak resident set since the last reset_peak_rss (VmHWM), else since the process started."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
