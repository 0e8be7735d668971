"""How full the disk of ``$VIIRS_BASE`` is: the filesystem's figures (statvfs) and the size of the top folders.

The folders walked are the top-level folders of ``$VIIRS_BASE`` but ``sdr/``: it holds months of files, and the
filesystem's figures already count them (a walk of every file would cost seconds). The walk stops at a time limit
and then says it is partial. Read-only. avo_status shows both; the monitor and ``status --quick`` take the
filesystem's figures only.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

SDR = "sdr"  # the folder of placed files: never walked (months of files)


def disk_use(base: Path, budget: float | None) -> dict:
    """The filesystem holding ``base``: ``{"total", "used", "free", "percent_used"}`` (or ``{"error"}``), and unless
    ``budget`` is None, ``"folders"`` (``{name: {"bytes", "files"}}`` of the top-level folders but sdr/) and
    ``"complete"`` (False when the walk stopped after ``budget`` seconds)."""
    try:
        usage = shutil.disk_usage(base)
    except OSError as err:
        return {"error": str(err)}
    result: dict = {"total": usage.total, "used": usage.used, "free": usage.free,
                    "percent_used": round(100.0 * usage.used / usage.total, 1) if usage.total else 0.0}
    if budget is None:
        return result
    folders, complete = folder_sizes(base, time.monotonic() + budget)
    result.update(folders=folders, complete=complete)
    return result


@dataclass
class _Tally:
    bytes: int = 0
    files: int = 0


def folder_sizes(base: Path, deadline: float) -> tuple[dict, bool]:
    """The bytes (allocated blocks) and regular files of each top-level folder of ``base`` but sdr/, and whether the
    walk ended before ``deadline`` (``time.monotonic``); folders it did not reach count nothing."""
    folders: dict = {}
    complete = True
    for top in _top_folders(base):
        tally = _Tally()
        stack = [top.path]
        while stack and complete:
            if _scan(stack.pop(), tally, stack) and time.monotonic() > deadline:
                complete = False
        folders[top.name] = {"bytes": tally.bytes, "files": tally.files}
    return folders, complete


def _top_folders(base: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(base) as entries:
            return sorted((e for e in entries if e.is_dir(follow_symlinks=False) and e.name != SDR),
                          key=lambda e: e.name)
    except OSError:
        return []


def _scan(path: str, tally: _Tally, stack: list[str]) -> bool:
    """Count one folder's regular files into ``tally`` and put its folders on ``stack``; False when unreadable."""
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                _count(entry, tally, stack)
    except OSError:
        return False
    return True


def _count(entry: os.DirEntry, tally: _Tally, stack: list[str]) -> None:
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        stack.append(entry.path)
    elif stat.S_ISREG(st.st_mode):
        tally.bytes += st.st_blocks * 512
        tally.files += 1
