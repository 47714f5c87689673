"""`edgebuild verify`, signing and provenance on a small published build (fake step kinds, the CLI in
this process); the device-side `model_signing verify key` command in a process of its own (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from enginekit import BASIC, TESTS, Project

pytest.importorskip("model_signing")   # the `sign` extra (the test extra installs it)


@pytest.fixture
def built(project: Project) -> Project:
    project.write(BASIC)
    r = project.edgebuild("run", "recipe.yaml")
    assert r.code == 0, r.err
    return project


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """A P-256 key pair made as the README says, with openssl (cryptography where it is missing)."""
    key, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    if shutil.which("openssl"):
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)], check=True)
        subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    else:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        k = ec.generate_private_key(ec.SECP256R1())
        key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, pub


def dist(p: Project) -> Path:
    return p.root / "dist" / "tiny"


def test_verify_passes_on_what_was_published(built: Project) -> None:
    r = built.edgebuild("verify", "dist/tiny/manifest.json")
    assert r.code == 0, r.err
    assert "ok    test-cpu/b.onnx" in r.out and "verified: " in r.out


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "test-cpu" / "b.onnx").write_bytes(b"tampered"), "test-cpu/b.onnx: changed: sha256"),
    (lambda d: (d / "test-gpu" / "c.onnx").unlink(), "test-gpu/c.onnx: missing"),
    (lambda d: (d / "test-cpu" / "backdoor.onnx").write_bytes(b"x"), "test-cpu/backdoor.onnx: extra"),
])
def test_verify_names_a_changed_missing_or_extra_file(built: Project, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    damage(dist(built))
    r = built.edgebuild("verify", "dist/tiny")
    assert r.code == 1 and "Traceback" not in r.err
    assert f"error: {message}" in r.err, r.err


def test_verify_refuses_an_older_release(built: Project) -> None:
    assert built.edgebuild("verify", "dist/tiny", "--min-release", "1").code == 0
    r = built.edgebuild("verify", "dist/tiny", "--min-release", "2")
    assert r.code == 1 and "error: release: release 1 < 2: a downgrade" in r.err


def test_a_malformed_manifest_is_a_located_error(built: Project) -> None:
    m = dist(built) / "manifest.json"
    m.write_text(m.read_text()[:200])
    r = built.edgebuild("verify", "dist/tiny/manifest.json")
    assert r.code == 1 and "dist/tiny/manifest.json:" in r.err.splitlines()[0] and "not valid JSON" in r.err


def test_provenance_is_an_in_toto_statement_listing_every_published_file(built: Project) -> None:
    import hashlib

    import jsonschema

    st = json.loads((dist(built) / "provenance.json").read_text())
    schema = json.loads((TESTS / "schemas" / "in-toto-statement-v1.schema.json").read_text())
    jsonschema.validate(st, schema, format_checker=jsonschema.FormatChecker())
    published = {f.relative_to(dist(built)).as_posix() for f in dist(built).rglob("*") if f.is_file()}
    published -= {"provenance.json", "build-log.json", "recipe.lock"}
    assert {s["name"] for s in st["subject"]} == published
    for s in st["subject"]:
        assert hashlib.sha256((dist(built) / s["name"]).read_bytes()).hexdigest() == s["digest"]["sha256"]
    definition = st["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["recipe"]["path"] == "recipe.yaml"
    deps = {d["name"]: d for d in definition["resolvedDependencies"]}
    assert deps["model"]["uri"] == "file:tiny.onnx" and len(deps["model"]["digest"]["sha256"]) == 64


def test_signed_builds_verify_and_tampering_fails_clearly(built: Project, keys: tuple[Path, Path]) -> None:
    key, pub = keys
    r = built.edgebuild("run", "recipe.yaml", "--sign", str(key))   # an up-to-date build is signed too
    assert r.code == 0, r.err
    assert (dist(built) / "test-cpu" / "model.sig").is_file() and (dist(built) / "manifest.sig").is_file()
    assert (dist(built) / "provenance.intoto.jsonl").is_file()
    ok = built.edgebuild("verify", "dist/tiny", "--key", str(pub))
    assert ok.code == 0 and "ok    manifest.sig" in ok.out and "ok    test-gpu/model.sig" in ok.out, ok.out + ok.err
    assert "ok    provenance.intoto.jsonl" in ok.out

    other = key.parent / "other"
    other.mkdir()
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(other / "k.pem")], check=True)
    subprocess.run(["openssl", "ec", "-in", str(other / "k.pem"), "-pubout", "-out", str(other / "p.pem")],
                   check=True, capture_output=True)
    wrong = built.edgebuild("verify", "dist/tiny", "--key", str(other / "p.pem"))
    assert wrong.code == 1 and "error: manifest.sig: does not verify with this key" in wrong.err, wrong.err

    m = dist(built) / "manifest.json"
    m.write_text(m.read_text().replace('"name": "tiny"', '"name": "tiny2"'))
    r = built.edgebuild("verify", "dist/tiny", "--key", str(pub))
    assert r.code == 1 and "error: manifest.sig: a signed file changed" in r.err, r.err

    sig = dist(built) / "test-cpu" / "model.sig"
    sig.write_bytes(sig.read_bytes()[:100])
    r = built.edgebuild("verify", "dist/tiny", "--key", str(pub))
    assert r.code == 1 and "error: test-cpu/model.sig: the signature file is damaged or cut short" in r.err, r.err
    assert "Traceback" not in r.err


def test_sign_after_the_fact_and_an_unsigned_rebuild_drops_stale_signatures(built: Project, keys: tuple[Path, Path]) -> None:
    key, pub = keys
    r = built.edgebuild("sign", "dist/tiny", "--key", str(key))
    assert r.code == 0 and "signed with" in r.out, r.err
    assert built.edgebuild("verify", "dist/tiny", "--key", str(pub)).code == 0
    built.write(BASIC.replace("tag: B", "tag: X"))
    assert built.edgebuild("run", "recipe.yaml").code == 0
    assert not (dist(built) / "manifest.sig").exists()
    r = built.edgebuild("verify", "dist/tiny", "--key", str(pub))
    assert r.code == 1 and "manifest.sig: missing: the build was not signed" in r.err
    bad = built.edgebuild("sign", "dist/tiny", "--key", str(pub))   # a public key cannot sign
    assert bad.code == 1 and "not a readable, unencrypted PEM private key" in bad.err and "Traceback" not in bad.err


def test_signing_reads_the_manifest_as_verify_does(built: Project, keys: tuple[Path, Path]) -> None:
    """`sign` on a folder whose manifest is missing or edited into an invalid one: exit 1 naming the file (and the
    field), nothing signed."""
    key, _ = keys
    manifest = dist(built) / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.unlink()
    r = built.edgebuild("sign", "dist/tiny", "--key", str(key))
    assert r.code == 1 and "dist/tiny/manifest.json: no such manifest" in r.err and "Traceback" not in r.err, r.err
    del data["targets"]["test-cpu"]["artifacts"][0]["sha256"]
    manifest.write_text(json.dumps(data))
    r = built.edgebuild("sign", "dist/tiny", "--key", str(key))
    assert r.code == 1 and "not a valid edgebuild manifest" in r.err and "sha256" in r.err, r.err
    assert not list(dist(built).rglob("*.sig"))


@pytest.mark.slow   # the device's own command, in a process of its own
def test_the_model_signing_cli_verifies_what_edgebuild_signed(built: Project, keys: tuple[Path, Path]) -> None:
    key, pub = keys
    assert built.edgebuild("sign", "dist/tiny", "--key", str(key)).code == 0
    folder = dist(built) / "test-cpu"

    def device_verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", str(folder),
                               "--signature", str(folder / "model.sig"), "--public_key", str(pub)],
                              capture_output=True, text=True, timeout=120)

    ok = device_verify()
    assert ok.returncode == 0 and "Verification succeeded" in ok.stdout, ok.stdout + ok.stderr
    (folder / "b.onnx").write_bytes((folder / "b.onnx").read_bytes() + b"!")
    bad = device_verify()
    assert bad.returncode != 0 and "Verification failed" in bad.stdout + bad.stderr
