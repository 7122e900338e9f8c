"""``python -m streamfuse`` runs the command-line interface."""

import sys

from streamfuse.cli import main

sys.exit(main())
