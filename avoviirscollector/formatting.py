"""Figures written for people: byte counts in decimal units (what avo_status, the monitor's page, cleanup and the
free-space sweep print). Pure."""

from __future__ import annotations


def human_bytes(count: float | None) -> str:
    """``count`` bytes in B, KB, MB, GB or TB (powers of 1000, one decimal above B); ``"?"`` for no number."""
    if not isinstance(count, (int, float)):
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return "?"  # not reached
