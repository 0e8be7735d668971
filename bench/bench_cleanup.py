"""Benchmark: cleanup of 100,000 files (half expired) against ``find DIR -type f -mtime +N -delete``.

Builds identical trees (100 folders of 1,000 files of 1 byte under sdr/, half of them 10 days old, half fresh)
and times, in the same run and alternating the order:
  - find:        ``find BASE -type f -mtime +5 -delete`` (the reference)
  - cleanup CLI: ``cleanup`` with VIIRS_RETENTION=5, as the nightly job runs it (interpreter start included)
  - in-process:  ``Cleaner.run()`` alone (the walk and the removals)
and prints each time and its ratio to find. Goal: cleanup CLI / find <= 1.5.

Run: ``make bench`` or ``scripts/loopback-netns .venv/bin/python bench/bench_cleanup.py [--files N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from avoviirscollector.cleanup import Cleaner, RetentionPolicy

DAY = 86400


def build(base: Path, files: int, per_folder: int = 1000) -> None:
    old = time.time() - 10 * DAY
    for sub in ("tmp", "log", "elements", "state"):
        (base / sub).mkdir(parents=True)
    for i in range(files):
        folder = base / "sdr" / f"d{i // per_folder:04d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True)
        path = folder / f"SVM{i % 16:02d}_npp_{i:07d}.h5"
        with open(path, "wb") as out:
            out.write(b"x")
        if i % 2 == 0:
            os.utime(path, (old, old))
    # folders' own times: old, so that emptied ones may go (find leaves folders; cleanup removes none here)
    for folder in (base / "sdr").iterdir():
        os.utime(folder, (old, old))


def count(base: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(base))


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cleanup_bin = Path(sys.executable).parent / "cleanup"
    root = Path(tempfile.mkdtemp(prefix="bench-cleanup-"))
    env = dict(os.environ, VIIRS_RETENTION="5")
    results: dict[str, list[float]] = {"find": [], "cleanup CLI": [], "in-process": []}
    try:
        for rnd in range(args.rounds):
            trees = {}
            for name in results:
                trees[name] = root / f"{name.replace(' ', '-')}-{rnd}"
                build(trees[name], args.files)
            os.sync()

            def run_find(base=trees["find"]):
                subprocess.run(["find", str(base), "-type", "f", "-mtime", "+5", "-delete"], check=True)

            def run_cli(base=trees["cleanup CLI"]):
                subprocess.run([str(cleanup_bin)], check=True, env=dict(env, VIIRS_BASE=str(base)),
                               stdout=subprocess.DEVNULL)

            def run_inproc(base=trees["in-process"]):
                Cleaner(base, RetentionPolicy(time.time(), 5)).run()

            order = [("find", run_find), ("cleanup CLI", run_cli), ("in-process", run_inproc)]
            if rnd % 2:
                order.reverse()
            for name, fn in order:
                results[name].append(timed(fn))
            left = {name: count(base) for name, base in trees.items()}
            if len(set(left.values())) != 1 or left["find"] != args.files // 2:
                print(f"trees differ after cleaning: {left}", file=sys.stderr)
                return 1
            for base in trees.values():
                shutil.rmtree(base)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ref = min(results["find"])
    print(f"cleanup of {args.files} files (half expired), best of {args.rounds} rounds")
    for name, times in results.items():
        print(f"  {name:12s} {min(times):7.3f} s   ratio to find {min(times) / ref:5.2f}x   (all: "
              + ", ".join(f"{t:.3f}" for t in times) + ")")
    ratio = min(results["cleanup CLI"]) / ref
    print(f"goal cleanup CLI / find <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'} ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
