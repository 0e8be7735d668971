"""Figures of measured values, as the tests and benchmarks report them."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values`` by nearest rank (a value that occurred); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
