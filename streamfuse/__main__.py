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
    sys.exit(status)


if __name__ == "__main__":
    run()
