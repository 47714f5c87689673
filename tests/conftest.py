"""Test-wide setup: tests/ itself is importable (shared kits such as browser_kit, clikit, fakesteps), and a
test that opens a browser is slow as well: `pytest -m "not slow"` is the quick loop, with no browser and
no edgebuild process started (see the README)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.slow)
