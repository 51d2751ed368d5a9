"""What every benchmark records beside its numbers: the machine, the versions, the load.

The machines are shared and noisy, so a benchmark measures ours and a baseline in the same run,
reports medians over repeats and ratios, and says what the machine was doing (``loadavg``).
"""

from __future__ import annotations

import os
import platform
import statistics
import time


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The CPU's AVX512 / AMX flags (what bf16 speed depends on); empty on an AVX2-only machine."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx512", "amx")))
    except OSError:
        pass
    return []


def versions(*packages: str) -> dict[str, str]:
    from promptintern.artifacts import package_versions

    return {"python": platform.python_version(), **package_versions(packages)}


def hardware(*packages: str) -> dict:
    """CPU model, cores (usable by this process), memory, OS, package versions."""
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gb = None
    return {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "mem_gb": mem_gb,
            "os": platform.platform(), "versions": versions(*packages)}


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
