"""``python -m streamfuse`` and the ``streamfuse`` command: the command-line interface (:func:`streamfuse.cli.main`).

Loading it takes a moment (torch, OpenCV, PyAV); Ctrl-C meanwhile ends the command as Ctrl-C does later,
with one line and exit status 130, not a traceback through the imports.
"""

import signal
import sys


def run() -> None:
    """Load and run the command-line interface; exits with its status."""
    try:
        from streamfuse.cli import main
    except KeyboardInterrupt:
        print("streamfuse: interrupted", file=sys.stderr)
        sys.exit(130)
    status = main()
    # The command is done (a checkpoint saved, outputs finalised): a Ctrl-C while the interpreter shuts down
    # interrupted torch's exit handlers with a traceback (`train`, interrupted twice).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _let_threads_finish(EXIT_GRACE_S)
    sys.exit(status)


#: At exit, how long the command waits for its worker threads still finishing (seconds, all together).
EXIT_GRACE_S = 1.0


def _let_threads_finish(grace_s: float) -> None:
    """Give daemon threads still ending (a stage winding down after an interrupt) a moment before the interpreter
    finalises: one returning from OpenCV or PyAV after that point is ended by a forced unwind that their C++ error
    handlers swallow, and the process aborted ('FATAL: exception not rethrown', exit -6 after a finished command)."""
    import threading
    import time

    deadline = time.monotonic() + grace_s
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))


if __name__ == "__main__":
    run()
