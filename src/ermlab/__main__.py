"""``python -m ermlab``: the ``ermlab`` command (see ``ermlab.cli``)."""

import sys

from ermlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
