"""What every bench computes from its samples (imported as `stats`: benches run as scripts, so
this directory is first on their path)."""

from __future__ import annotations

import math
import os
import platform
from typing import Any


def machine() -> dict[str, Any]:
    """What the figures were measured on: cores, kernel, Python, and the load at the end."""
    return {
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the two closest ranks: numpy's default and
    `statistics.quantiles(..., method="inclusive")`. NaN for no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
