"""The Manifest model: a valid manifest loads and writes back byte for byte; an invalid one is a clear error that
names the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebuild.errors import UserError
from edgebuild.output import manifest

FIXTURE = Path(__file__).parent / "fixtures" / "manifest.json"


def test_a_valid_manifest_loads_and_writes_back_the_same_bytes(tmp_path: Path) -> None:
    m = manifest.load(FIXTURE)
    assert m.name and m.targets and m.steps
    first = next(iter(m.targets.values())).artifacts[0]
    assert first.path.startswith(next(iter(m.targets)) + "/") and len(first.sha256) == 64
    assert m.text() == FIXTURE.read_text()   # the keys in the order edgebuild writes them, byte for byte
    written = m.to_dict()
    assert manifest.load(FIXTURE.parent).to_dict() == written        # the folder works too


def test_an_invalid_manifest_names_the_field(tmp_path: Path) -> None:
    data = json.loads(FIXTURE.read_text())
    target = next(iter(data["targets"]))
    data["targets"][target]["artifacts"][0]["size"] = "big"
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError) as err:
        manifest.load(path)
    text = err.value.render()
    assert f"at targets.{target}.artifacts[0].size: 'big' is not of type 'integer'" in text
    assert "not a valid edgebuild manifest" in text and str(path) in text


def test_a_manifest_missing_a_required_key_is_refused(tmp_path: Path) -> None:
    data = json.loads(FIXTURE.read_text())
    del data["recipe"]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="at the top level: 'recipe' is a required property"):
        manifest.load(path)


def test_unknown_keys_of_an_entry_are_kept(tmp_path: Path) -> None:
    """An entry written by another edgebuild keeps what this one does not know when a build keeps it."""
    data = json.loads(FIXTURE.read_text())
    target = next(iter(data["targets"]))
    data["targets"][target]["artifacts"][0]["note"] = "from a newer edgebuild"
    m = manifest.Manifest.from_dict(data)
    assert m.to_dict()["targets"][target]["artifacts"][0]["note"] == "from a newer edgebuild"


def test_a_previous_manifest_that_is_not_valid_is_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text('{"manifest": 1, "targets": {}}')
    assert manifest.read_previous(path) is None
    assert manifest.read_previous(tmp_path / "absent.json") is None
