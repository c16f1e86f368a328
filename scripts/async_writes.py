#!/usr/bin/env python3
"""Writes that hold a thread against writes that don't, measured in one run.

Runs `factwal load` in several ways of keeping the same number of writes in
flight, interleaved round by round so that a disk or a machine whose speed
drifts weighs on every way alike, and prints the medians:

  threads   T threads, each with one blocking `Store::write` at a time
  async     T threads, each keeping W writes in flight through
            `Store::write_async` and polling their tickets together (what a
            runtime with T worker threads does with T*W tasks)

For each: writes/s, per-write latency p50 and p99 (from `load`'s summary),
and CPU seconds (user + system, from /usr/bin/time) per 100,000 writes.

Usage: scripts/async_writes.py [--bin target/release/factwal] [--rounds 5]
       [--dir /tmp/factwal-async-bench] [--writes 20000]
"""

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SUMMARY = re.compile(
    r"load: ([\d,]+) writes in .*? \(([\d,]+) writes/s\); per-write latency p50 (\S+ \S+), p99 (\S+ \S+)"
)

# (name, in flight, load arguments)
WAYS = [
    ("64 threads, blocking", 64, ["--threads", "64"]),
    ("1 thread, 64 async", 64, ["--threads", "1", "--async", "--in-flight", "64"]),
    ("2 threads, 32 async each", 64, ["--threads", "2", "--async", "--in-flight", "32"]),
    ("1024 threads, blocking", 1024, ["--threads", "1024"]),
    ("1 thread, 1024 async", 1024, ["--threads", "1", "--async", "--in-flight", "1024"]),
    ("2 threads, 512 async each", 1024, ["--threads", "2", "--async", "--in-flight", "512"]),
]


def millis(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"µs": 0.001, "us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_once(binary: str, store: Path, writes: int, args: list) -> dict:
    if store.exists():
        shutil.rmtree(store)
    command = [
        "/usr/bin/time", "-f", "cpu %U %S",
        binary, "load", "--dir", str(store), "--sessions", "64", "--writes", str(writes),
        "--value-bytes", "200", "--log", "off", *args,
    ]
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    summary = SUMMARY.search(done.stderr)
    cpu = re.search(r"cpu (\S+) (\S+)", done.stderr)
    if not summary or not cpu:
        sys.exit(f"could not read the summary of {' '.join(command)}:\n{done.stderr}")
    count = int(summary.group(1).replace(",", ""))
    return {
        "writes_per_s": int(summary.group(2).replace(",", "")),
        "p50_ms": millis(summary.group(3)),
        "p99_ms": millis(summary.group(4)),
        "cpu_s_per_100k": (float(cpu.group(1)) + float(cpu.group(2))) * 100_000 / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="target/release/factwal")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temporary directory)")
    options = parser.parse_args()
    root = Path(options.dir) if options.dir else Path(tempfile.mkdtemp(prefix="factwal-async-"))
    root.mkdir(parents=True, exist_ok=True)
    results = {name: [] for name, _, _ in WAYS}
    try:
        for round_index in range(options.rounds):
            for name, _, args in WAYS:
                results[name].append(run_once(options.bin, root / "store", options.writes, args))
            print(f"round {round_index + 1}/{options.rounds} done", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"medians of {options.rounds} interleaved rounds, {options.writes} writes each")
    print(f"{'way':<28} {'in flight':>9} {'writes/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU s/100k':>10}")
    for name, in_flight, _ in WAYS:
        runs = results[name]
        median = lambda key: statistics.median(run[key] for run in runs)  # noqa: E731
        print(
            f"{name:<28} {in_flight:>9} {median('writes_per_s'):>9.0f} {median('p50_ms'):>7.3f} "
            f"{median('p99_ms'):>7.2f} {median('cpu_s_per_100k'):>10.2f}"
        )


if __name__ == "__main__":
    main()
