"""`python -m edgebuild` is the `edgebuild` command."""

from edgebuild.cli import entry

entry()
