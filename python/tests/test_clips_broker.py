"""The CLIPS broker (python/examples/clips_broker.py) killed mid-request.

A stream of requests goes to the broker; it answers each once it is durable
in factwal and applied to the session's CLIPS environment. The broker is
killed with SIGKILL at a random moment, then started again with `--dump`,
which rebuilds every session from factwal and prints CLIPS's own listing of
each session's working memory. It must hold exactly the acknowledged
requests' facts, or those plus the one request that was being handled
(durable, not yet answered), and an `(alert)` exactly where risk is "high";
factwal's own facts must agree. Rounds go on in the same directory.

clipspy is required in CI (`FACTWAL_CLIPS_REQUIRED=1`); elsewhere these
tests are skipped when it is not installed."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import factwal

if os.environ.get("FACTWAL_CLIPS_REQUIRED") == "1":
    import clips  # noqa: F401  (fails loudly when missing)
else:
    pytest.importorskip("clips")

BROKER = Path(__file__).resolve().parents[1] / "examples" / "clips_broker.py"
SESSIONS = ["s0", "s1", "s2", "s3"]
NAMES = ["risk", "draft", "score", "owner"]
VALUES = ["high", "low", "7", "ann", "bob"]


def request(rng, number):
    ops = []
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.65:
            ops.append(["assert", rng.choice(NAMES), rng.choice(VALUES)])
        elif roll < 0.95:
            ops.append(["retract", rng.choice(NAMES)])
        else:
            ops.append(["drop"])
    return {"id": number, "session": rng.choice(SESSIONS), "ops": ops}


def apply(model, req):
    facts = model.setdefault(req["session"], {})
    for op in req["ops"]:
        if op[0] == "assert":
            facts[op[1]] = op[2]
        elif op[0] == "retract":
            facts.pop(op[1], None)
        else:
            facts.clear()


def listing_of(model):
    """The working memory the broker must show for `model`."""
    return {
        session: {"facts": dict(facts), "alert": facts.get("risk") == "high"}
        for session, facts in sorted(model.items())
        if facts
    }


def broker(data_dir, *extra):
    return [sys.executable, str(BROKER), "--data-dir", data_dir, *extra]


def run_round(data_dir, rng, first_id, kill_after, extra):
    child = subprocess.Popen(
        broker(data_dir, *extra),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = child.stdout.readline()
    assert ready.startswith("ready"), f"broker failed to start: {ready!r} {child.stderr.read()}"
    sent = []

    def feed():
        number = first_id
        try:
            while True:
                req = request(rng, number)
                sent.append(req)
                child.stdin.write(json.dumps(req) + "\n")
                child.stdin.flush()
                number += 1
                if len(sent) % 64 == 0:
                    time.sleep(0.001)
        except (BrokenPipeError, OSError, ValueError):
            return

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    acked = []

    def read_acks():
        for line in child.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ack":
                acked.append(int(parts[1]))

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    time.sleep(kill_after)
    child.send_signal(signal.SIGKILL)
    child.wait()
    reader.join()
    feeder.join(timeout=10)
    return sent, acked


def dump(data_dir, extra):
    done = subprocess.run(broker(data_dir, "--dump", *extra), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("extra", [[], ["--wal-enabled", "false"]], ids=["wal", "direct"])
def test_killed_broker_rebuilds_exactly_the_acknowledged_facts(tmp_path, extra):
    data_dir = str(tmp_path / "broker")
    seed = int(os.environ.get("FACTWAL_CLIPS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    model = {}
    next_id = 0
    checked = 0
    for round_ in range(4):
        sent, acked = run_round(data_dir, rng, next_id, rng.uniform(0.1, 0.5), extra)
        context = f"seed {seed}, round {round_}"
        assert acked == [req["id"] for req in sent[: len(acked)]], f"{context}: acks out of order"
        assert acked, f"{context}: no request was acknowledged"
        for req in sent[: len(acked)]:
            apply(model, req)
        with_pending = json.loads(json.dumps(model))
        if len(sent) > len(acked):
            apply(with_pending, sent[len(acked)])
        observed = dump(data_dir, extra)
        if observed == listing_of(model):
            pass
        elif observed == listing_of(with_pending):
            model = with_pending
        else:
            raise AssertionError(
                f"{context}: CLIPS working memory after restart matches neither the "
                f"{len(acked)} acknowledged requests nor those plus the one in flight\n"
                f"observed: {observed}\nacknowledged: {listing_of(model)}"
            )
        with factwal.ReadOnlyStore(data_dir) as reader:
            stored = {s: {k: v.decode() for k, v in reader.facts(s).items()} for s in reader.sessions()}
        assert {s: f for s, f in stored.items() if f} == {s: f for s, f in model.items() if f}, context
        checked += len(acked)
        next_id += len(sent)
    print(f"clips broker ({extra or 'wal'}): 4 kills, {checked} acknowledged requests checked, seed {seed}")
