"""The Python API over a real store in a temporary directory: round trips,
atomic batches, limits, every exception kind a caller can meet, and the
GIL released so that threads share syncs."""

import os
import shutil
import subprocess
import sys
import threading
import zlib

import pytest

import factwal
from factwal import Batch


def crash_after_writes(data_dir, writes):
    """Writes `writes` facts of session "s" in a child process that then
    exits without closing the store: the WAL stays as a crash leaves it."""
    script = (
        "import os, sys, factwal\n"
        "store = factwal.Store(sys.argv[1])\n"
        "for i in range(int(sys.argv[2])):\n"
        "    store.assert_fact('s', f'f{i}', b'value %d' % i)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, data_dir, str(writes)], check=True)


def segments(wal_dir):
    return sorted(name for name in os.listdir(wal_dir) if name.endswith(".wal"))


def test_round_trip_survives_close_and_reopen(data_dir):
    with factwal.Store(data_dir) as store:
        assert store.write(Batch().assert_fact("s1", "risk", b"high").assert_fact("s1", "draft", b"1")) == 1
        assert store.retract_fact("s1", "draft") == 2
        assert store.assert_fact("s2", "score", b"\x00\xff") == 3
        assert store.drop_session("s2") == 4
        assert store.fact("s1", "risk") == b"high"
        assert store.fact("s1", "draft") is None
        assert store.facts("s1") == {"risk": b"high"}
        assert store.sessions() == ["s1"]
        stats = store.stats()
        assert (stats.lsn_last, stats.wal_records, stats.writes_in_flight) == (4, 4, 0)
        report = store.checkpoint("truncate")
        assert report.applied_lsn == 4 and report.mode == "truncate"
    with factwal.Store.open(data_dir) as store:
        assert store.facts("s1") == {"risk": b"high"}
        assert store.stats().lsn_last == 4
    with factwal.ReadOnlyStore(data_dir) as reader:
        assert reader.sessions() == ["s1"]
        assert reader.fact("s1", "risk") == b"high"


def test_a_batch_is_atomic_and_a_refused_one_writes_nothing(data_dir):
    with factwal.Store(data_dir) as store:
        store.assert_fact("s1", "a", b"1")
        too_long = "x" * (factwal.ID_BYTES_MAX + 1)
        with pytest.raises(factwal.LimitExceeded) as refused:
            store.write(Batch().assert_fact("s1", "b", b"2").assert_fact("s1", too_long, b"3"))
        assert refused.value.actual == factwal.ID_BYTES_MAX + 1
        assert refused.value.limit == factwal.ID_BYTES_MAX
        assert store.facts("s1") == {"a": b"1"}
        assert store.stats().lsn_last == 1


def test_limits_name_what_and_how_much(data_dir):
    with factwal.Store(data_dir, max_record_bytes=1024, segment_bytes=16384) as store:
        with pytest.raises(factwal.LimitExceeded) as refused:
            store.assert_fact("s", "f", b"v" * 2000)
        assert refused.value.what == "record bytes"
        assert refused.value.limit == 1024
        assert refused.value.actual > 1024
        assert isinstance(refused.value, factwal.Error)
        assert "limit exceeded: record bytes" in str(refused.value)
        assert store.stats().lsn_last == 0


def test_values_are_bytes_and_ids_are_str(data_dir):
    with factwal.Store(data_dir) as store:
        with pytest.raises(TypeError):
            store.assert_fact("s", "f", "a str is not bytes")
        store.assert_fact("s", "f", bytearray(b"bytearray is fine"))
        assert store.fact("s", "f") == b"bytearray is fine"
        with pytest.raises(factwal.InvalidArgument) as refused:
            store.write(Batch())
        assert "at least one operation" in str(refused.value)


def test_locked_while_open_names_the_lock_file(data_dir):
    with factwal.Store(data_dir):
        with pytest.raises(factwal.Locked) as refused:
            factwal.Store(data_dir)
        assert refused.value.path == os.path.join(data_dir, "LOCK")
        with pytest.raises(factwal.Locked):
            factwal.ReadOnlyStore(data_dir)


def test_closed_after_close(data_dir):
    store = factwal.Store(data_dir)
    store.assert_fact("s", "f", b"v")
    report = store.close()
    assert report.clean and report.lock_released and bool(report)
    with pytest.raises(factwal.Closed):
        store.assert_fact("s", "g", b"v")
    with pytest.raises(factwal.Closed):
        store.facts("s")
    assert not store.close().clean or True  # a second close does nothing and does not raise


def test_config_errors_name_the_key(data_dir, tmp_path):
    with pytest.raises(factwal.ConfigError) as refused:
        factwal.Store(data_dir, segment_bytes=1)
    assert refused.value.key == "persistence.segment_bytes"
    with pytest.raises(factwal.ConfigError):
        factwal.Store(data_dir, recovery_mode="optimistic")
    config = tmp_path / "factwal.toml"
    config.write_text("[persistence]\nsegment_bytes = 'big'\n")
    with pytest.raises(factwal.ConfigError) as refused:
        factwal.Store(data_dir, config=str(config))
    assert refused.value.path == str(config)
    config.write_text(f"[persistence]\ndata_dir = '{data_dir}'\nsegment_bytes = 33554432\n")
    with factwal.Store(config=str(config)) as store:
        assert store.data_dir == data_dir
    with pytest.raises(factwal.InvalidArgument):
        factwal.Store()


def test_io_errors_name_the_path_and_operation(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    with pytest.raises(factwal.IoError) as refused:
        factwal.Store(str(not_a_dir))
    assert refused.value.path is not None and str(not_a_dir) in refused.value.path
    assert refused.value.operation is not None


def test_another_stores_segment_is_refused(tmp_path):
    # A store left as a crash leaves it (its WAL still holds records), and
    # one of its segments copied into another store's WAL directory: the
    # other store refuses to open, naming the segment.
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    crash_after_writes(first, 3)
    with factwal.Store(second) as store:
        store.assert_fact("s", "f", b"v")
    segment = segments(os.path.join(first, "wal"))[-1]
    shutil.copy(os.path.join(first, "wal", segment), os.path.join(second, "wal", segment))
    with pytest.raises((factwal.ForeignSegment, factwal.WalMismatch)) as refused:
        factwal.Store(second)
    assert segment in refused.value.path
    # The first store recovers its three writes.
    with factwal.Store(first) as store:
        assert len(store.facts("s")) == 3


def test_a_damaged_wal_is_corrupted_under_absolute_consistency(tmp_path):
    data_dir = str(tmp_path / "store")
    crash_after_writes(data_dir, 3)
    wal = os.path.join(data_dir, "wal")
    segment = os.path.join(wal, segments(wal)[-1])
    with open(segment, "r+b") as file:
        file.seek(200)  # inside the first records, past the 96-byte header
        byte = file.read(1)
        file.seek(200)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(factwal.Corrupted) as refused:
        factwal.Store(data_dir, recovery_mode="absolute-consistency")
    assert refused.value.path == segment
    assert refused.value.offset is not None and refused.value.lsn is not None


def test_a_damaged_state_file_is_reported_not_read(data_dir):
    with factwal.Store(data_dir) as store:
        store.assert_fact("s", "f", b"v")
    state = os.path.join(data_dir, "state.redb")
    with open(state, "r+b") as file:
        file.seek(0)
        file.write(b"\xde\xad\xbe\xef" * 64)
    with pytest.raises((factwal.StateCorrupted, factwal.RedbError)) as refused:
        factwal.Store(data_dir)
    assert refused.value.path is not None and "state.redb" in refused.value.path


def test_a_segment_from_a_newer_factwal_is_refused_unchanged(tmp_path):
    # format_version (header bytes 8..12) raised to 3, the header's CRC
    # (bytes 60..64, CRC-32 of bytes 0..60) made right again: a segment
    # written by a newer factwal. The open refuses, naming it, and changes
    # nothing.
    data_dir = str(tmp_path / "store")
    crash_after_writes(data_dir, 2)
    segment = os.path.join(data_dir, "wal", segments(os.path.join(data_dir, "wal"))[-1])
    with open(segment, "r+b") as file:
        header = bytearray(file.read(64))
        header[8:12] = (3).to_bytes(4, "little")
        header[60:64] = zlib.crc32(bytes(header[:60])).to_bytes(4, "little")
        file.seek(0)
        file.write(header)
    with open(segment, "rb") as file:
        before = file.read()
    with pytest.raises(factwal.UnsupportedFormatVersion) as refused:
        factwal.Store(data_dir)
    assert refused.value.path == segment
    assert "format version 3" in str(refused.value)
    with open(segment, "rb") as file:
        assert file.read() == before


def test_every_exception_kind_is_a_factwal_error():
    kinds = [
        factwal.ConfigError, factwal.IoError, factwal.Locked, factwal.Corrupted,
        factwal.StateCorrupted, factwal.ForeignSegment, factwal.WalMismatch,
        factwal.UnsupportedFormatVersion, factwal.Poisoned, factwal.StateSyncFailed,
        factwal.LimitExceeded, factwal.Closed, factwal.InvalidArgument, factwal.RedbError,
        factwal.Timeout, factwal.InternalError,
    ]
    assert len(set(kinds)) == 16
    for kind in kinds:
        assert issubclass(kind, factwal.Error) and issubclass(kind, Exception)


def test_threads_share_syncs_because_the_gil_is_released(data_dir):
    # 16 threads x 50 writes: with the GIL held across the sync, each write
    # would be a group of its own.
    with factwal.Store(data_dir) as store:
        start = threading.Barrier(16)

        def writer(t):
            start.wait()
            for i in range(50):
                store.assert_fact(f"s{t}", f"f{i}", b"v")

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = store.stats()
        assert stats.wal_records == 800
        assert stats.wal_groups < 800, stats
        assert sum(len(store.facts(f"s{t}")) for t in range(16)) == 800


def test_checkpoint_loop_and_stats(data_dir):
    with factwal.Store(data_dir) as store:
        assert store.start_checkpoint_loop(0.01) == "started"
        assert store.start_checkpoint_loop(0.01) == "already-running"
        with pytest.raises(factwal.InvalidArgument):
            store.start_checkpoint_loop(-1.0)
        store.assert_fact("s", "f", b"v")
        store.checkpoint()
        assert store.checkpoint_stats().n >= 1
        assert len(store.store_id) > 0


def test_direct_mode(data_dir):
    with factwal.Store(data_dir, wal_enabled=False) as store:
        assert store.assert_fact("s", "f", b"v") == 1
        assert store.stats().applied_lsn == 1


@pytest.mark.parametrize(
    "kind,exception,attributes",
    [
        ("Io", factwal.IoError, {"path": "/data/wal/00000000000000000003.wal", "operation": "Sync", "what": "segment", "errno": 5}),
        ("Corrupted", factwal.Corrupted, {"path": "/data/wal/00000000000000000003.wal", "offset": 4096, "lsn": 17}),
        ("StateCorrupted", factwal.StateCorrupted, {"path": "/data/state.redb"}),
        ("ForeignSegment", factwal.ForeignSegment, {"path": "/data/wal/00000000000000000003.wal"}),
        ("WalMismatch", factwal.WalMismatch, {"path": "/data/wal"}),
        ("UnsupportedFormatVersion", factwal.UnsupportedFormatVersion, {"path": "/data/wal/00000000000000000003.wal"}),
        ("Panicked", factwal.InternalError, {}),
        ("Locked", factwal.Locked, {"path": "/data/LOCK"}),
        ("LimitExceeded", factwal.LimitExceeded, {"what": "record bytes", "actual": 5000, "limit": 4096}),
        ("Poisoned", factwal.Poisoned, {}),
        ("StateSyncFailed", factwal.StateSyncFailed, {"path": "/data/state.redb"}),
        ("Closed", factwal.Closed, {"path": None}),
        ("Config", factwal.ConfigError, {"path": "/etc/factwal.toml", "key": "persistence.segment_bytes"}),
        ("Timeout", factwal.Timeout, {}),
        ("InvalidArgument", factwal.InvalidArgument, {}),
    ],
)
def test_every_error_kind_becomes_its_exception_with_its_attributes(kind, exception, attributes):
    # One example of each Rust error kind, converted as any call converts
    # it: the class, the Rust message, and what it names as attributes.
    from factwal import _factwal

    with pytest.raises(exception) as raised:
        _factwal._raise_for_test(kind)
    assert isinstance(raised.value, factwal.Error)
    for name, value in attributes.items():
        assert getattr(raised.value, name) == value, (kind, name)
    if kind in ("Poisoned", "StateSyncFailed"):
        assert "sync" in raised.value.cause and "/data/wal/00000000000000000003.wal" in raised.value.cause
        assert raised.value.cause in str(raised.value)
    assert str(raised.value)
