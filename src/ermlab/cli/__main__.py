import sys

from ermlab.cli import main

sys.exit(main())
