"""factwal: an embedded, zero-loss store for rule-engine session state.

Write a session's fact operations to factwal first; once the call returns
they are durable (synced to a write-ahead log), and only then apply them to
the rule engine. On startup, rebuild each session from factwal: it gives
back every acknowledged write after any crash, and nothing half-applied.

    import factwal

    with factwal.Store("/var/lib/broker/facts") as store:
        lsn = store.write(factwal.Batch()
                          .assert_fact("session-7", "risk", b"high")
                          .retract_fact("session-7", "draft"))
        store.facts("session-7")          # {'risk': b'high'}

Values are ``bytes``; session and fact ids are ``str`` (at most 4,096 bytes
in UTF-8). Every call that waits for the disk releases the GIL, so Python
threads writing at once share syncs. ``await store.write_async(batch)``
writes from asyncio without a thread per write.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from typing import Dict

from factwal._factwal import (
    BATCH_OPS_MAX,
    ID_BYTES_MAX,
    Batch,
    CheckpointStats,
    Closed,
    CloseReport,
    Completions,
    ConfigError,
    Corrupted,
    Error,
    ForeignSegment,
    InternalError,
    InvalidArgument,
    IoError,
    LimitExceeded,
    Locked,
    PassReport,
    Poisoned,
    RedbError,
    StateCorrupted,
    StateSyncFailed,
    Stats,
    Timeout,
    UnsupportedFormatVersion,
    WalMismatch,
)
from factwal._factwal import ReadOnlyStore as _ReadOnlyStore
from factwal._factwal import Store as _Store

__all__ = [
    "BATCH_OPS_MAX",
    "ID_BYTES_MAX",
    "Batch",
    "CheckpointStats",
    "CloseReport",
    "Closed",
    "ConfigError",
    "Corrupted",
    "Error",
    "ForeignSegment",
    "InternalError",
    "InvalidArgument",
    "IoError",
    "LimitExceeded",
    "Locked",
    "PassReport",
    "Poisoned",
    "ReadOnlyStore",
    "RedbError",
    "StateCorrupted",
    "StateSyncFailed",
    "Stats",
    "Store",
    "Timeout",
    "UnsupportedFormatVersion",
    "WalMismatch",
]

_log = logging.getLogger("factwal")


class _LoopBridge:
    """One event loop's side of async writes: the pipe it watches and the
    futures waiting on it. The thread that finishes a write's group never
    takes the GIL; it writes a byte to the pipe, and the loop drains."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.completions = Completions()
        self.futures: Dict[int, asyncio.Future] = {}
        self.tokens = itertools.count()
        loop.add_reader(self.completions.fileno(), self.drain)

    def drain(self) -> None:
        for token, lsn, error in self.completions.drain():
            future = self.futures.pop(token, None)
            if future is None or future.done():
                continue  # cancelled: the write happened (or failed) anyway
            if error is None:
                future.set_result(lsn)
            else:
                future.set_exception(error)


_bridges: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBridge]" = (
    weakref.WeakKeyDictionary()
)


def _bridge(loop: asyncio.AbstractEventLoop) -> _LoopBridge:
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = _bridges[loop] = _LoopBridge(loop)
    return bridge


class Store(_Store):
    """An open store. Use it as a context manager, or call ``close()``.

    ``Store(data_dir, *, config=None, wal_path=None, wal_enabled=None,
    segment_bytes=None, max_record_bytes=None, wal_bytes_max=None,
    recovery_mode=None, redb_cache_bytes=None, max_writes_in_flight=None)``:
    the defaults for ``data_dir``, or the TOML file ``config``, then every
    keyword that is not ``None`` (``wal_enabled=False`` is direct mode, one
    redb commit per write). Raises a ``factwal.Error`` subclass naming what
    and where: ``Locked`` while another store or process has it open,
    ``ConfigError``, ``Corrupted``, ``IoError``...
    """

    @classmethod
    def open(cls, data_dir=None, **options) -> "Store":
        """The same as ``Store(data_dir, **options)``."""
        return cls(data_dir, **options)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info) -> None:
        report = self.close()
        if not report.clean:
            _log.error("factwal: close was not clean: %r", report)

    async def write_async(self, batch: Batch) -> int:
        """Writes ``batch`` and returns its LSN once durable, without
        blocking the event loop or holding a thread while it waits. The
        batch is queued when this is called: cancelling the await does not
        withdraw it."""
        loop = asyncio.get_running_loop()
        bridge = _bridge(loop)
        token = next(bridge.tokens)
        future = loop.create_future()
        bridge.futures[token] = future
        self.submit(batch, bridge.completions, token)
        return await future


class ReadOnlyStore(_ReadOnlyStore):
    """A closed store opened for reading, changing no file:
    ``ReadOnlyStore(data_dir, *, config=None, wal_path=None)``."""

    def __enter__(self) -> "ReadOnlyStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
