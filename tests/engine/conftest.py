"""Fixtures of the engine tests; the helpers live in enginekit.py (a unique name: tests/steps has a conftest too)."""

from __future__ import annotations

from pathlib import Path

import pytest
from enginekit import Project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)
