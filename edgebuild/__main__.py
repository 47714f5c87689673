"""`python -m edgebuild` is the `edgebuild` command."""

from edgebuild.cli import main

raise SystemExit(main())
