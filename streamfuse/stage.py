"""The lifecycle shared by sources and sinks: open on the caller's thread, then work on a thread of its own."""

from __future__ import annotations

import abc
import threading


class ThreadedStage(abc.ABC):
    """A pipeline stage with :meth:`open` (fails fast, on the caller's thread) and a worker thread.

    Subclasses set :attr:`thread_name` and implement :meth:`open` and :meth:`_run`.
    """

    thread_name = "stage"
    _thread: threading.Thread | None = None

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the resource (file, device, socket); raise a clear error if that fails."""

    @abc.abstractmethod
    def _run(self) -> None:
        """The worker thread's body."""

    def start(self) -> None:
        """Open, then start the worker thread."""
        self.open()
        self._start_thread()

    def _start_thread(self) -> None:
        """Start the worker thread running :meth:`_run`."""
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker thread to finish."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """True while the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()
