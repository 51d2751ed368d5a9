"""The machine a number was made on: CPU model and flags, usable cores, memory, package versions.

Every benchmark line and every results record carries it (``benchmarks/common.py``,
``flows.reproduce``): the same code runs at very different speeds on an AVX2-only and an
AVX512-BF16 CPU, so a ratio means nothing without it.
"""

from __future__ import annotations

import os
import platform


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
