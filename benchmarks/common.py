"""What every benchmark records beside its numbers: the machine, the versions, the load.

The machines are shared and noisy, so a benchmark measures ours and a baseline in the same run,
reports medians over repeats and ratios, and says what the machine was doing (``loadavg``).
"""

from __future__ import annotations

import os
import statistics
import time

# the machine's description is the library's (flows.reproduce records it beside every table too)
from promptintern.machine import cpu_flags, cpu_model, hardware, versions  # noqa: F401


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def timed(fn, repeats: int):
    """(last result, [seconds per call]) over ``repeats`` calls."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, times


def median(values) -> float:
    return round(statistics.median(values), 4)


def print_table(header: list[str], rows: list[list]) -> None:
    """A plain fixed-width table (first column left-aligned, the rest right-aligned)."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
