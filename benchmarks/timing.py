"""Timing helpers shared by the benchmarks: interleaved pairs, medians, the load average, a GEMM reference.

Every comparison runs its candidates in interleaved rounds (A B, then B A, ...) in one process, so that a change of
machine load affects both sides alike, and reports the median time of each and the median of the per-round ratios.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def load_average() -> str:
    """The 1 / 5 / 15 minute load averages, for the record (a benchmark is only meaningful on an idle machine)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min, {os.cpu_count()} CPUs)"


def interleaved(
    candidates: dict[str, Callable[[], object]], rounds: int, device: str = "cpu", warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds of each candidate over ``rounds`` interleaved rounds (the order alternates every round).

    Each candidate is first called ``warmup`` times (kernel selection, allocator warm-up), untimed.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            sync(device)
            start = time.perf_counter()
            candidates[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of ``times[numerator] / times[denominator]`` (> 1: the denominator is faster)."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator], strict=True))


def gemm_gflops(n: int, dtype: torch.dtype, device: str, rounds: int = 10) -> float:
    """Achieved GFLOP/s of an n x n x n ``torch.mm`` (the dense-kernel reference of this machine), median of
    ``rounds`` after 3 warm-up calls."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = statistics.median(interleaved({"gemm": lambda: a @ b}, rounds, device, warmup=3)["gemm"])
    return 2 * n**3 / seconds / 1e9
