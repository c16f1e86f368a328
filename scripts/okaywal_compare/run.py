#!/usr/bin/env python3
"""factwal's write paths against okaywal, interleaved round by round.

Builds the okaywal_compare binary (release), then runs every way once per
round, each in its own process on a fresh directory, for a fixed time, and
prints the medians over the rounds:

  writes/s, per-write latency p50 and p99 (submit to ack), CPU seconds
  (user + system of the whole process) per 100,000 writes, writes per sync
  (where known), and two ratios: the way's writes/s over the floor's and
  over okaywal-64's of the same round (median of the per-round ratios, so
  that a disk or a machine whose speed drifts weighs on every way alike).

The order of the ways is rotated by one each round, so that no way always
runs first or last.

Usage: scripts/okaywal_compare/run.py [--rounds 5] [--seconds 3] [--dir /tmp]
       [--ways floor,okaywal-64,...] [--raw FILE] [--no-build]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WAYS = [
    "floor",
    "okaywal-64",
    "factwal-64",
    "factwal-async-2rt-64",
    "factwal-async-2rt-1024",
    "factwal-async-1rt-64",
    "factwal-pipelined-64",
]
FLOOR, OKAYWAL = "floor", "okaywal-64"


def build(target_dir: str) -> Path:
    env = dict(os.environ, CARGO_TARGET_DIR=target_dir)
    command = ["cargo", "build", "--release", "--manifest-path", str(HERE / "Cargo.toml")]
    done = subprocess.run(command, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed")
    return Path(target_dir) / "release" / "okaywal_compare"


def run_once(binary: Path, way: str, seconds: float, directory: str) -> dict:
    command = [str(binary), way, "--seconds", str(seconds), "--dir", directory]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"{' '.join(command)} printed no JSON line:\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1])


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, spec):
    if value is None:
        return format("-", ">" + spec.split(".")[0])
    return format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", default="/tmp", help="where each run makes its fresh directory (default /tmp)")
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated ways (default: all seven)")
    parser.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", "/tmp/okc-target"))
    parser.add_argument("--raw", help="also write every run's JSON line to this file")
    parser.add_argument("--no-build", action="store_true", help="use the binary already built")
    options = parser.parse_args()
    ways = [way for way in options.ways.split(",") if way]

    binary = Path(options.target_dir) / "release" / "okaywal_compare"
    if not options.no_build:
        binary = build(options.target_dir)

    rounds = []  # one {way: result} per round
    raw = open(options.raw, "w") if options.raw else None
    try:
        for index in range(options.rounds):
            shift = index % len(ways)
            order = ways[shift:] + ways[:shift]
            results = {}
            for way in order:
                result = run_once(binary, way, options.seconds, options.dir)
                result["round"] = index + 1
                results[way] = result
                if raw:
                    raw.write(json.dumps(result) + "\n")
                    raw.flush()
                print(
                    f"round {index + 1}/{options.rounds} {way:<24} {result['writes_per_s']:>10.0f} writes/s"
                    f"  p50 {result['p50_ms']:.3f} ms  p99 {result['p99_ms']:.2f} ms",
                    file=sys.stderr,
                )
            rounds.append(results)
    finally:
        if raw:
            raw.close()

    def ratio(result_round, way, base):
        if way not in result_round or base not in result_round:
            return None
        return result_round[way]["writes_per_s"] / max(result_round[base]["writes_per_s"], 1e-9)

    print(f"medians of {options.rounds} interleaved rounds, {options.seconds:g} s per run")
    header = (
        f"{'way':<24} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU s/100k':>10} "
        f"{'w/sync':>7} {'x floor':>8} {'x okaywal-64':>12}"
    )
    print(header)
    print("-" * len(header))
    for way in ways:
        runs = [r[way] for r in rounds]
        row = {
            "writes_per_s": median(r["writes_per_s"] for r in runs),
            "p50_ms": median(r["p50_ms"] for r in runs),
            "p99_ms": median(r["p99_ms"] for r in runs),
            "cpu": median(r["cpu_s_per_100k"] for r in runs),
            "per_sync": median(r.get("writes_per_sync") for r in runs),
            "x_floor": median(ratio(r, way, FLOOR) for r in rounds),
            "x_okaywal": median(ratio(r, way, OKAYWAL) for r in rounds),
        }
        print(
            f"{way:<24} {fmt(row['writes_per_s'], '10.0f')} {fmt(row['p50_ms'], '8.3f')} "
            f"{fmt(row['p99_ms'], '8.2f')} {fmt(row['cpu'], '10.2f')} {fmt(row['per_sync'], '7.1f')} "
            f"{fmt(row['x_floor'], '8.1f')} {fmt(row['x_okaywal'], '12.2f')}"
        )


if __name__ == "__main__":
    main()
