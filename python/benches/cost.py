"""Cost of a durable write, measured from Python in one run.

Per-operation latency (p50, p99) and throughput with 1, 8 and 64 Python
threads, for:

- ``floor``: one thread doing ``os.pwrite`` of 256 bytes at increasing
  offsets into a preallocated, zero-filled file, then ``os.fdatasync``: the
  disk's cost of one small durable write, the reference for factwal's p50;
- ``factwal``: each thread looping ``store.assert_fact(f"s{t}", f"f{i}",
  value)`` with a 200-byte value, the checkpoint loop folding every 0.1 s;
- ``sqlite3``: the stdlib module, WAL mode, ``synchronous=FULL``, each thread
  its own connection to one database, one ``INSERT OR REPLACE`` and one
  commit per operation (what a broker would write by hand).

Every (way, threads) run gets a fresh directory on the same disk and its own
subprocess, so no run's threads or caches bleed into the next; runs are
interleaved round by round, the order rotated each round. The report gives
medians over rounds, and the median of each round's ratios: factwal-1 p50
against the floor's p50, factwal-T throughput against sqlite3-T, and
factwal's p50/p99 against the broker plan's 0.5 ms estimate.

Run it from outside the ``python/`` directory so that ``import factwal`` is
the installed package (``pip install ./python``)::

    python python/benches/cost.py                  # 5 rounds x 3 s, /tmp
    python python/benches/cost.py --rounds 3 --duration 2 --dir /var/tmp \\
        --raw cost.jsonl

Python standard library only, besides factwal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

PLAN_MS = 0.5  # the broker plan's estimate of one durable write
VALUE_BYTES = 200
FLOOR_WRITE_BYTES = 256
FLOOR_FILE_BYTES = 64 << 20
WARMUP_OPS = 3  # per thread, before the clock starts: first-touch costs
CHECKPOINT_INTERVAL_S = 0.1
SQLITE_BUSY_TIMEOUT_MS = 60_000

DEFAULT_RUNS = [("floor", 1)] + [
    (way, threads) for way in ("factwal", "sqlite3") for threads in (1, 8, 64)
]


# --- the child: one (way, threads) run ------------------------------------


def run_threads(threads: int, duration_s: float, setup, op) -> Tuple[list, int]:
    """Starts `threads` threads, each calling `setup(t)` to get its state,
    `WARMUP_OPS` unrecorded `op(state, t, i)`, then looping `op` until the
    deadline and recording each call's latency in ns. Returns (latencies of
    every thread, elapsed ns from the start to the last thread's finish)."""
    ready = threading.Barrier(threads + 1)
    go = threading.Event()
    latencies: List[List[int]] = [[] for _ in range(threads)]
    finished = [0] * threads
    deadline = [0]
    errors: List[BaseException] = []

    def worker(t: int) -> None:
        try:
            state = setup(t)
            i = 0
            for _ in range(WARMUP_OPS):
                op(state, t, i)
                i += 1
        except BaseException as error:  # noqa: BLE001 - raised by the caller
            errors.append(error)
            ready.abort()
            return
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        go.wait()
        mine = latencies[t]
        clock = time.perf_counter_ns
        end = deadline[0]
        try:
            while True:
                start = clock()
                if start >= end:
                    break
                op(state, t, i)
                mine.append(clock() - start)
                i += 1
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
        finished[t] = clock()

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start = 0
    try:
        ready.wait()  # every thread set up and warmed up
        start = time.perf_counter_ns()
        deadline[0] = start + int(duration_s * 1e9)
    except threading.BrokenBarrierError:
        pass
    go.set()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return latencies, max(finished) - start


def child_floor(threads: int, duration_s: float, work: str) -> dict:
    path = os.path.join(work, "floor.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    zeros = bytes(1 << 20)
    for offset in range(0, FLOOR_FILE_BYTES, len(zeros)):
        os.pwrite(fd, zeros, offset)  # written zeros, not fallocate: as the WAL
    os.fsync(fd)
    record = b"\xa5" * FLOOR_WRITE_BYTES
    slots = FLOOR_FILE_BYTES // FLOOR_WRITE_BYTES // threads

    def op(_state, t: int, i: int) -> None:
        os.pwrite(fd, record, (t * slots + i % slots) * FLOOR_WRITE_BYTES)
        os.fdatasync(fd)

    try:
        latencies, elapsed = run_threads(threads, duration_s, lambda t: None, op)
    finally:
        os.close(fd)
    return {"latencies": latencies, "elapsed_ns": elapsed}


def child_factwal(threads: int, duration_s: float, work: str) -> dict:
    import factwal

    value = b"v" * VALUE_BYTES
    with factwal.Store(os.path.join(work, "store")) as store:
        store.start_checkpoint_loop(CHECKPOINT_INTERVAL_S)

        def op(_state, t: int, i: int) -> None:
            store.assert_fact(f"s{t}", f"f{i}", value)

        before = store.stats()
        latencies, elapsed = run_threads(threads, duration_s, lambda t: None, op)
        after = store.stats()
    extra = {
        "wal_records": after.wal_records - before.wal_records,
        "wal_groups": after.wal_groups - before.wal_groups,
        "factwal_file": getattr(factwal, "__file__", None),
    }
    return {"latencies": latencies, "elapsed_ns": elapsed, "extra": extra}


def child_sqlite3(threads: int, duration_s: float, work: str) -> dict:
    import sqlite3

    path = os.path.join(work, "facts.db")
    setup_conn = sqlite3.connect(path, isolation_level=None)
    setup_conn.execute("PRAGMA journal_mode=WAL")
    setup_conn.execute(
        "CREATE TABLE facts(session TEXT, fact TEXT, value BLOB,"
        " PRIMARY KEY(session, fact))"
    )
    setup_conn.close()
    value = b"v" * VALUE_BYTES
    connections = []

    def setup(_t: int):
        conn = sqlite3.connect(
            path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,  # closed by the main thread
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        connections.append(conn)
        return conn

    def op(conn, t: int, i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT OR REPLACE INTO facts(session, fact, value) VALUES (?, ?, ?)",
            (f"s{t}", f"f{i}", value),
        )
        conn.execute("COMMIT")

    try:
        latencies, elapsed = run_threads(threads, duration_s, setup, op)
    finally:
        for conn in connections:
            conn.close()
    extra = {"sqlite_version": sqlite3.sqlite_version}
    return {"latencies": latencies, "elapsed_ns": elapsed, "extra": extra}


CHILDREN = {"floor": child_floor, "factwal": child_factwal, "sqlite3": child_sqlite3}


def percentile(sorted_ns: List[int], percent: int) -> float:
    """Nearest-rank percentile of sorted ns latencies, in ms."""
    if not sorted_ns:
        return float("nan")
    rank = max(1, -(-percent * len(sorted_ns) // 100))  # ceil(percent% of n)
    return sorted_ns[rank - 1] / 1e6


def child_main(way: str, threads: int, duration_s: float, base_dir: str) -> None:
    work = tempfile.mkdtemp(prefix=f"cost-{way}-{threads}-", dir=base_dir)
    load = os.getloadavg()[0]
    try:
        result = CHILDREN[way](threads, duration_s, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    every = sorted(ns for per_thread in result["latencies"] for ns in per_thread)
    elapsed_s = result["elapsed_ns"] / 1e9
    out = {
        "way": way,
        "threads": threads,
        "duration_s": duration_s,
        "ops": len(every),
        "elapsed_s": elapsed_s,
        "ops_per_s": len(every) / elapsed_s if elapsed_s > 0 else 0.0,
        "p50_ms": percentile(every, 50),
        "p99_ms": percentile(every, 99),
        "max_ms": every[-1] / 1e6 if every else float("nan"),
        "load1": load,
        # fairness: the fewest and most operations one thread completed
        "thread_ops_min": min(len(x) for x in result["latencies"]),
        "thread_ops_max": max(len(x) for x in result["latencies"]),
    }
    out.update(result.get("extra", {}))
    print(json.dumps(out))


# --- the parent: rounds, medians, the table -------------------------------


def run_child(script: str, way: str, threads: int, args) -> dict:
    command = [sys.executable, script, "--child", way, str(threads),
               "--duration", str(args.duration), "--dir", args.dir]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"cost.py: the {way}-{threads} run failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(values: List[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def times(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}x"


def report(rounds: List[Dict[Tuple[str, int], dict]], runs, args) -> str:
    def med(key: Tuple[str, int], field: str) -> float:
        return median([r[key][field] for r in rounds if key in r])

    def ratio(a: Tuple[str, int], fa: str, b: Tuple[str, int], fb: str) -> float:
        return median([r[a][fa] / r[b][fb] for r in rounds
                       if a in r and b in r and r[b][fb]])

    lines = [
        f"{len(rounds)} rounds x {args.duration:g} s per run, median of the rounds;"
        f" {VALUE_BYTES}-byte values; files in {args.dir};"
        f" load average (1 min) {fmt(median([x['load1'] for r in rounds for x in r.values()]), 2)}"
        f" on {os.cpu_count()} CPUs (at the start: {fmt(args.load_at_start, 2)}).",
        "",
        "| way | threads | p50 ms | p99 ms | ops/s | syncs/write "
        "| p50 vs floor | ops/s vs sqlite3 | p50 vs plan's 0.5 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for way, threads in runs:
        key = (way, threads)
        p50, p99, ops = med(key, "p50_ms"), med(key, "p99_ms"), med(key, "ops_per_s")
        syncs = "1" if way in ("floor", "sqlite3") else "n/a"
        vs_floor = vs_sqlite = vs_plan = ""
        if way == "factwal":
            syncs = fmt(median([r[key]["wal_groups"] / r[key]["wal_records"]
                                for r in rounds if key in r and r[key]["wal_records"]]))
            vs_sqlite = times(ratio(key, "ops_per_s", ("sqlite3", threads), "ops_per_s"), 1)
        if way in ("factwal", "sqlite3"):
            vs_plan = times(p50 / PLAN_MS)
            if threads == 1:
                vs_floor = times(ratio(key, "p50_ms", ("floor", 1), "p50_ms"))
        lines.append(f"| {way} | {threads} | {fmt(p50)} | {fmt(p99)} | {ops:,.0f} | {syncs} "
                     f"| {vs_floor} | {vs_sqlite} | {vs_plan} |")
    lines.append("")
    lines.append("Ratios are medians of each round's ratio. syncs/write: factwal's"
                 " wal_groups / wal_records (one sync per group); sqlite3 syncs its WAL"
                 " at every commit (synchronous=FULL). sqlite3 with many threads: while"
                 " one connection holds the write lock the others sleep in SQLite's"
                 " busy handler (1 ms, 2 ms, ... up to 100 ms a try), so a few threads"
                 " do most commits at near single-writer latency (the p50) while others"
                 " wait up to seconds, too few ops to move the p99: see max_ms and"
                 " thread_ops_min/max in --raw.")
    return "\n".join(lines)


def targets(rounds, runs) -> str:
    out = []
    keys = {k for r in rounds for k in r}
    if ("factwal", 1) in keys and ("floor", 1) in keys:
        r = median([x[("factwal", 1)]["p50_ms"] / x[("floor", 1)]["p50_ms"]
                    for x in rounds if ("factwal", 1) in x and ("floor", 1) in x])
        out.append(f"target 1, factwal-1 p50 within 1.3x of the floor: {r:.2f}x,"
                   f" {'met' if r <= 1.3 else 'NOT met'}")
    if ("factwal", 64) in keys and ("sqlite3", 64) in keys:
        r = median([x[("factwal", 64)]["ops_per_s"] / x[("sqlite3", 64)]["ops_per_s"]
                    for x in rounds if ("factwal", 64) in x and ("sqlite3", 64) in x])
        out.append(f"target 2, factwal-64 >= 10x sqlite3-64 throughput: {r:.1f}x,"
                   f" {'met' if r >= 10 else 'NOT met'}")
    p50 = median([x[("factwal", 1)]["p50_ms"] for x in rounds if ("factwal", 1) in x])
    p99 = median([x[("factwal", 1)]["p99_ms"] for x in rounds if ("factwal", 1) in x])
    out.append(f"broker plan: factwal-1 p50 = {fmt(p50)} ms ({times(p50 / PLAN_MS)} the"
               f" plan's {PLAN_MS} ms), p99 = {fmt(p99)} ms ({times(p99 / PLAN_MS)})")
    return "\n".join(out)


def parse_runs(text: Optional[str]):
    if not text:
        return DEFAULT_RUNS
    runs = []
    for item in text.split(","):
        way, _, threads = item.strip().partition("-")
        if way not in CHILDREN:
            raise SystemExit(f"cost.py: unknown way {way!r} (floor, factwal, sqlite3)")
        runs.append((way, int(threads or 1)))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run (3)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    parser.add_argument("--dir", default=tempfile.gettempdir(),
                        help="where each run makes its fresh directory (the temp dir)")
    parser.add_argument("--raw", metavar="FILE", help="append one JSON line per run to FILE")
    parser.add_argument("--runs", metavar="LIST",
                        help="way-threads list, e.g. floor-1,factwal-1,sqlite3-64 (all)")
    parser.add_argument("--child", nargs=2, metavar=("WAY", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child[0], int(args.child[1]), args.duration, args.dir)
        return

    runs = parse_runs(args.runs)
    args.load_at_start = os.getloadavg()[0]
    script = os.path.abspath(__file__)
    raw = open(args.raw, "a") if args.raw else None
    rounds: List[Dict[Tuple[str, int], dict]] = []
    try:
        for n in range(args.rounds):
            shift = n % len(runs)
            order = runs[shift:] + runs[:shift]
            results: Dict[Tuple[str, int], dict] = {}
            for way, threads in order:
                result = run_child(script, way, threads, args)
                result["round"] = n
                results[(way, threads)] = result
                print(f"round {n + 1}/{args.rounds} {way:>7}-{threads:<2}"
                      f" p50 {result['p50_ms']:7.3f} ms  p99 {result['p99_ms']:7.3f} ms"
                      f"  {result['ops_per_s']:9,.0f} ops/s  load {result['load1']:.1f}",
                      file=sys.stderr, flush=True)
                if raw:
                    raw.write(json.dumps(result) + "\n")
                    raw.flush()
            rounds.append(results)
    finally:
        if raw:
            raw.close()
    print(report(rounds, runs, args))
    print()
    print(targets(rounds, runs))


if __name__ == "__main__":
    main()
