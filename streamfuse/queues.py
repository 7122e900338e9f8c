"""A bounded queue between pipeline stages with an explicit drop policy and an end-of-stream mark."""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """Raised by :meth:`StageQueue.get` when the queue is closed and empty (end of stream)."""


class StageQueue(Generic[T]):
    """Bounded FIFO connecting two threads.

    ``policy`` decides what :meth:`put` does when the queue is full: ``wait`` blocks the producer
    until there is room (nothing is lost; right for files), ``drop_oldest`` discards the oldest item
    and counts it (the consumer always gets the freshest data; right for live cameras).

    The producer calls :meth:`close` at end of stream; the consumer drains what is left and then
    :meth:`get` raises :class:`Closed`. :meth:`abort` closes and discards everything at once
    (shutdown).
    """

    def __init__(self, maxsize: int, policy: str = "wait", *, name: str = "queue") -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        if policy not in ("wait", "drop_oldest"):
            raise ValueError(f"policy must be 'wait' or 'drop_oldest', got {policy!r}")
        self.name = name
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0
        self._items: collections.deque[T] = collections.deque()
        self._closed = False
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Add ``item``; returns False if the queue was closed (or ``wait`` timed out) and the item was not added."""
        with self._lock:
            if self.policy == "wait":
                if not self._not_full.wait_for(lambda: self._closed or len(self._items) < self.maxsize, timeout):
                    return False
            if self._closed:  # before dropping: a closed queue keeps what it holds for the consumer
                return False
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._not_empty.notify()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Remove and return the oldest item; None on timeout.

        Raises:
            Closed: The queue is closed and empty.
        """
        with self._lock:
            if not self._not_empty.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                raise Closed(self.name)
            item = self._items.popleft()
            self._not_full.notify()
            return item

    def close(self) -> None:
        """Mark the end of the stream: items already queued are still delivered."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def abort(self) -> None:
        """Close and discard queued items (used on shutdown)."""
        with self._lock:
            self._items.clear()
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called."""
        return self._closed

    def __len__(self) -> int:
        return len(self._items)
