"""`python -m batch ...` is the same as `rekbatch ...`."""

import sys

from batch.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
