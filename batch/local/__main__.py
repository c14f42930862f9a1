"""`python -m batch.local ...` runs `python -m local_stack ...`, as the README documents both."""

from local_stack.__main__ import main

raise SystemExit(main())
