"""``python -m xvit``: the command line."""

from xvit.cli import main

raise SystemExit(main())
