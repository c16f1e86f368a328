#!/usr/bin/env python3
"""Peak memory of `factwal load` writing distinct keys, sampled from
/proc/<pid>/status (VmRSS) every 0.2 s. The figure behind the README's
"Memory" section.

    python3 scripts/memory_bound.py [--binary target/release/factwal] [--seconds 60]
        [--config FILE] [--dir DIR] [--threads 8] [--value-bytes 200]

Every write asserts a fact never written before (100,000 sessions x 1,000
facts), so redb's page cache and the overlay grow as far as they are let.
Prints one JSON line: peak and final RSS in MiB, writes, writes/s.
"""
import argparse, json, os, shutil, subprocess, time

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/factwal")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--config")
    parser.add_argument("--dir", default="factwal-memory")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--value-bytes", type=int, default=200)
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    command = [args.binary, "load", "--dir", args.dir, "--sessions", "100000", "--facts-per-session", "1000",
               "--writes", "1000000000", "--threads", str(args.threads), "--value-bytes", str(args.value_bytes)]
    if args.config:
        command += ["--config", args.config]
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    writes = 0
    peak = 0
    samples = []
    os.set_blocking(child.stdout.fileno(), False)
    last_sample = 0.0
    while time.monotonic() - started < args.seconds:
        chunk = child.stdout.read(1 << 20)
        if chunk:
            writes += chunk.count(b"\n")
        else:
            time.sleep(0.01)
        now = time.monotonic() - started
        if now - last_sample >= 0.2:
            last_sample = now
            try:
                with open(f"/proc/{child.pid}/status") as status:
                    for line in status:
                        if line.startswith("VmRSS:"):
                            rss = int(line.split()[1]) / 1024
                            peak = max(peak, rss)
                            samples.append((round(now, 1), round(rss)))
            except FileNotFoundError:
                break
    child.kill()
    child.wait()
    elapsed = time.monotonic() - started
    print(json.dumps({"binary": args.binary, "config": args.config, "seconds": round(elapsed, 1),
                      "writes": writes, "writes_per_s": round(writes / elapsed),
                      "rss_peak_mib": round(peak), "rss_final_mib": samples[-1][1] if samples else None,
                      "rss_every_10s_mib": [rss for (t, rss) in samples if int(t * 5) % 50 == 0]}))
    shutil.rmtree(args.dir, ignore_errors=True)

if __name__ == "__main__":
    main()
