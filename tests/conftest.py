"""Test-wide setup: tests/ itself is importable (shared kits such as browser_kit, fakesteps)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
