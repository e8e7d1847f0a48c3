"""``python -m dlproc`` runs the command line."""

import sys

from dlproc.runtime.cli import main

sys.exit(main())
