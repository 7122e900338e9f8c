from __future__ import annotations

import threading
import time

import pytest

from streamfuse.queues import Closed, StageQueue


def test_wait_policy_blocks_and_loses_nothing():
    queue = StageQueue(2, "wait")
    received = []

    def consume():
        while True:
            try:
                item = queue.get()
            except Closed:
                return
            received.append(item)
            time.sleep(0.002)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(50):
        assert queue.put(i)
    queue.close()
    consumer.join(5)
    assert received == list(range(50))
    assert queue.dropped == 0


def test_drop_oldest_keeps_freshest_and_counts():
    queue = StageQueue(3, "drop_oldest")
    for i in range(10):
        assert queue.put(i)
    assert queue.dropped == 7
    queue.close()
    assert not queue.put(10)  # refused, and nothing queued is thrown away for it
    assert queue.dropped == 7
    assert [queue.get(), queue.get(), queue.get()] == [7, 8, 9]
    with pytest.raises(Closed):
        queue.get()


def test_get_times_out_and_put_after_close_is_refused():
    queue = StageQueue(1, "wait")
    assert queue.get(timeout=0.01) is None
    queue.close()
    assert not queue.put(1)


def test_abort_releases_a_blocked_producer():
    queue = StageQueue(1, "wait")
    queue.put(0)
    results = []
    producer = threading.Thread(target=lambda: results.append(queue.put(1)))
    producer.start()
    time.sleep(0.05)
    queue.abort()
    producer.join(2)
    assert results == [False]
    with pytest.raises(Closed):
        queue.get()


def test_bad_arguments():
    with pytest.raises(ValueError, match="maxsize"):
        StageQueue(0)
    with pytest.raises(ValueError, match="policy"):
        StageQueue(1, "drop_newest")
