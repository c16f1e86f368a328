#!/usr/bin/env python3
"""A rule-engine broker that never loses a fact a session was exposed to.

Each session has its own CLIPS environment (clipspy). A request names a
session and fact operations; the broker writes them to factwal first (the
call returns once they are durable), then asserts/retracts them in the
session's CLIPS environment and runs its rules, and only then answers. On
startup it rebuilds every session's environment from factwal, so after any
crash (kill -9 included) each session's working memory holds exactly what
was acknowledged, plus at most the one request that was durable but not yet
answered.

Requests are JSON lines on stdin:

    {"id": 7, "session": "s1", "ops": [["assert", "risk", "high"],
                                       ["retract", "draft"], ["drop"]]}

and each answer is a line `ack <id> <lsn>` on stdout once applied. The rule
base: an `(alert)` is in a session's working memory while its `risk` fact
is "high" (logical support: retracting the fact retracts the alert).

    python clips_broker.py --data-dir /var/lib/broker [--wal-path DIR]
                           [--wal-enabled true|false] [--dump]

`--dump` rebuilds every session and prints CLIPS's own listing of each
session's working memory as JSON, then exits (what the crash test reads).
"""

import argparse
import json
import sys

import clips

import factwal

RULES = [
    "(deftemplate fact (slot name (type STRING)) (slot value (type STRING)))",
    '(defrule high-risk (logical (fact (name "risk") (value "high"))) => (assert (alert)))',
]


class Session:
    """One session's CLIPS environment."""

    def __init__(self):
        self.env = clips.Environment()
        for construct in RULES:
            self.env.build(construct)
        self.template = self.env.find_template("fact")

    def find(self, name):
        for fact in self.env.facts():
            if fact.template.name == "fact" and fact["name"] == name:
                return fact
        return None

    def assert_fact(self, name, value):
        old = self.find(name)
        if old is not None:
            old.retract()
        self.template.assert_fact(name=name, value=value)

    def retract_fact(self, name):
        old = self.find(name)
        if old is not None:
            old.retract()

    def drop(self):
        for fact in list(self.env.facts()):
            if fact.template.name == "fact":
                fact.retract()

    def listing(self):
        """CLIPS's working memory: the facts, and whether an alert is there."""
        facts, alert = {}, False
        for fact in self.env.facts():
            if fact.template.name == "fact":
                facts[fact["name"]] = fact["value"]
            elif fact.template.name == "alert":
                alert = True
        return {"facts": facts, "alert": alert}


class Broker:
    def __init__(self, store):
        self.store = store
        self.sessions = {}
        # Startup: every session's environment rebuilt from factwal.
        for session_id in store.sessions():
            session = self.session(session_id)
            for name, value in store.facts(session_id).items():
                session.assert_fact(name, value.decode("utf-8"))
            session.env.run()

    def session(self, session_id):
        if session_id not in self.sessions:
            self.sessions[session_id] = Session()
        return self.sessions[session_id]

    def handle(self, request):
        session_id, ops = request["session"], request["ops"]
        batch = factwal.Batch()
        for op in ops:
            if op[0] == "assert":
                batch.assert_fact(session_id, op[1], op[2].encode("utf-8"))
            elif op[0] == "retract":
                batch.retract_fact(session_id, op[1])
            elif op[0] == "drop":
                batch.drop_session(session_id)
            else:
                raise ValueError(f"request {request.get('id')}: unknown operation {op[0]!r}")
        # Durable first: a crash after this line replays the request.
        lsn = self.store.write(batch)
        session = self.session(session_id)
        for op in ops:
            if op[0] == "assert":
                session.assert_fact(op[1], op[2])
            elif op[0] == "retract":
                session.retract_fact(op[1])
            else:
                session.drop()
        session.env.run()
        return lsn


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--wal-path", default=None)
    parser.add_argument("--wal-enabled", choices=["true", "false"], default="true")
    parser.add_argument("--dump", action="store_true")
    args = parser.parse_args()
    store = factwal.Store(
        args.data_dir, wal_path=args.wal_path, wal_enabled=args.wal_enabled == "true"
    )
    with store:
        if args.wal_enabled == "true":
            store.start_checkpoint_loop(0.05)
        broker = Broker(store)
        if args.dump:
            listing = {sid: s.listing() for sid, s in sorted(broker.sessions.items())}
            print(json.dumps(listing, sort_keys=True), flush=True)
            return
        print(f"ready {len(broker.sessions)}", flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            lsn = broker.handle(request)
            sys.stdout.write(f"ack {request['id']} {lsn}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
