"""``python -m unlearn_core``: the command line (see :mod:`unlearn_core.cli`)."""

import sys

from unlearn_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
