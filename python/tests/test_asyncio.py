"""`await store.write_async(batch)`: completed from the thread that syncs
the group, through a pipe the event loop watches; no thread per write."""

import asyncio
import threading

import pytest

import factwal
from factwal import Batch


def test_many_async_writes_share_syncs_and_get_dense_lsns(data_dir):
    async def main(store):
        writes = [store.write_async(Batch().assert_fact(f"s{i % 8}", f"f{i}", b"v")) for i in range(500)]
        return await asyncio.gather(*writes)

    with factwal.Store(data_dir) as store:
        threads_before = threading.active_count()
        lsns = asyncio.run(main(store))
        assert sorted(lsns) == list(range(1, 501))
        stats = store.stats()
        assert stats.wal_groups < 500, stats
        assert stats.writes_in_flight == 0
        # No thread per write: the store's commit thread at most.
        assert threading.active_count() <= threads_before + 1


def test_one_coroutines_writes_keep_their_order(data_dir):
    async def main(store):
        return [await store.write_async(Batch().assert_fact("s", f"f{i}", b"v")) for i in range(50)]

    with factwal.Store(data_dir) as store:
        assert asyncio.run(main(store)) == list(range(1, 51))


def test_errors_arrive_as_the_exception_kind(data_dir):
    async def main(store):
        with pytest.raises(factwal.InvalidArgument):
            await store.write_async(Batch())
        store.close()
        with pytest.raises(factwal.Closed):
            await store.write_async(Batch().assert_fact("s", "f", b"v"))

    store = factwal.Store(data_dir)
    asyncio.run(main(store))


def test_a_cancelled_await_still_writes(data_dir):
    async def main(store):
        task = asyncio.ensure_future(store.write_async(Batch().assert_fact("s", "cancelled", b"v")))
        await asyncio.sleep(0)
        task.cancel()
        last = await store.write_async(Batch().assert_fact("s", "last", b"v"))
        return last

    with factwal.Store(data_dir) as store:
        assert asyncio.run(main(store)) == 2
        assert store.facts("s") == {"cancelled": b"v", "last": b"v"}


def test_two_event_loops_in_two_threads(data_dir):
    with factwal.Store(data_dir) as store:
        results = {}

        def run(name):
            async def main():
                return await asyncio.gather(
                    *[store.write_async(Batch().assert_fact(name, f"f{i}", b"v")) for i in range(100)]
                )
            results[name] = asyncio.run(main())

        threads = [threading.Thread(target=run, args=(f"loop{n}",)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results["loop0"] + results["loop1"]) == list(range(1, 201))
