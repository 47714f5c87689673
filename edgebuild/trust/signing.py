"""Signatures over what a build published, in formats a device checks without edgebuild.

Each target's folder is signed with OpenSSF model signing (the `model-signing` package: a Sigstore bundle
holding a DSSE-signed in-toto statement over every file of the folder) into `<target>/model.sig`, which a
device verifies with `model_signing verify key`; the manifest gets `manifest.sig` the same way, and the
provenance a DSSE envelope (`provenance.intoto.jsonl`). Keys are elliptic-curve PEM files: signing works
offline. model_signing and cryptography are imported only here, only when signing or verifying.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebuild.errors import Problem, UserError

SIG = "model.sig"
MANIFEST_SIG = "manifest.sig"
ENVELOPE = "provenance.intoto.jsonl"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
INSTALL = "install the signing extra: pip install 'edgebuild[sign]'"
KEY_HINT = ("an elliptic-curve key in PEM: `openssl ecparam -name prime256v1 -genkey -noout -out key.pem`, "
            "its public half `openssl ec -in key.pem -pubout -out pub.pem`")


@dataclass
class Checked:
    """One verified thing: what, whether it held, and why not."""

    what: str
    ok: bool
    detail: str = ""


def _library() -> Any:
    try:
        import model_signing
    except ImportError as exc:
        raise UserError(Problem(f"signing needs the model-signing package ({exc})", None, INSTALL)) from None
    return model_signing


def _private_key(path: Path) -> Any:
    """The signing key, checked first: model_signing's own error for a wrong file is a bare traceback."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(Problem(f"{path}: not a readable, unencrypted PEM private key ({_first_line(exc)})", None,
                                KEY_HINT)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserError(Problem(f"{path}: a {type(key).__name__.lstrip('_')}, but model signing takes elliptic-curve keys",
                                None, KEY_HINT))
    return key


def _public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(Problem(f"{path}: not a readable PEM public key ({_first_line(exc)})", None, KEY_HINT)) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UserError(Problem(f"{path}: not an elliptic-curve public key", None, KEY_HINT))
    return key


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def targets(out: Path) -> list[str]:
    """The target folders the manifest in `out` publishes (the manifest read as `verify` and `report` read it:
    a missing, cut-short or invalid one is a user error naming the file)."""
    from edgebuild.output import manifest

    return sorted(t for t in manifest.load(out / manifest.FILE).targets if (out / t).is_dir())


def sign_dist(out: Path, key: Path) -> list[str]:
    """Sign every target folder, the manifest and the provenance of a published build; what was signed."""
    ms = _library()
    _private_key(key)
    signed = []
    for t in targets(out):
        config = ms.signing.Config().use_elliptic_key_signer(private_key=key)
        config.set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=[SIG]))
        config.sign(out / t, out / t / SIG)
        signed.append(f"{t}/{SIG}")
    ms.signing.Config().use_elliptic_key_signer(private_key=key).sign(out / "manifest.json", out / MANIFEST_SIG)
    signed.append(MANIFEST_SIG)
    if (out / "provenance.json").is_file():
        envelope = dsse_sign((out / "provenance.json").read_bytes(), key)
        (out / ENVELOPE).write_text(json.dumps(envelope) + "\n")
        signed.append(ENVELOPE)
    print(f"signed with {key}: {', '.join(signed)}")
    return signed


def drop(out: Path) -> None:
    """An unsigned build removes the signatures of an earlier one: a manifest.sig beside a newer manifest
    would only fail verification, or worse, be taken for this build's."""
    for name in (MANIFEST_SIG, ENVELOPE):
        (out / name).unlink(missing_ok=True)


def _pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is actually signed."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def _hash_for(curve: Any) -> Any:
    from cryptography.hazmat.primitives import hashes

    return {256: hashes.SHA256(), 384: hashes.SHA384()}.get(curve.key_size, hashes.SHA512())


def key_id(public_key: Any) -> str:
    """sha256 of the public key's DER encoding: names the key in the envelope."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def dsse_sign(body: bytes, key_file: Path) -> dict[str, Any]:
    """A DSSE envelope of `body` (an in-toto statement) signed with an elliptic-curve key."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = _private_key(key_file)
    sig = key.sign(_pae(PAYLOAD_TYPE, body), ec.ECDSA(_hash_for(key.curve)))
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(body).decode(),
            "signatures": [{"keyid": key_id(key.public_key()), "sig": base64.b64encode(sig).decode()}]}


def dsse_verify(envelope: dict[str, Any], public_key: Any) -> bytes:
    """The payload of an envelope signed by `public_key`; ValueError saying why not."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        body = base64.b64decode(envelope["payload"], validate=True)
        sigs = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
        ptype = envelope["payloadType"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a DSSE envelope ({_first_line(exc)})") from None
    for sig in sigs:
        try:
            public_key.verify(sig, _pae(ptype, body), ec.ECDSA(_hash_for(public_key.curve)))
            return body
        except InvalidSignature:
            continue
    raise ValueError("no signature in it was made by this key")


def verify_dist(out: Path, pub: Path) -> list[Checked]:
    """Check every signature of a published build with a public key."""
    ms = _library()
    public_key = _public_key(pub)
    rows = [_verify_ms(ms, out / t, out / t / SIG, pub, f"{t}/{SIG}") for t in targets(out)]
    rows.append(_verify_ms(ms, out / "manifest.json", out / MANIFEST_SIG, pub, MANIFEST_SIG))
    if (out / "provenance.json").is_file() or (out / ENVELOPE).is_file():
        rows.append(_verify_envelope(out, public_key))
    return rows


def _verify_ms(ms: Any, model: Path, sig: Path, pub: Path, what: str) -> Checked:
    if not sig.is_file():
        return Checked(what, False, "missing: the build was not signed (run --sign KEY.pem, or edgebuild sign)")
    try:
        json.loads(sig.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return Checked(what, False, f"the signature file is damaged or cut short ({_first_line(exc)})")
    try:
        ms.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, sig)
    except Exception as exc:   # the library's own errors (bad bundle, wrong key, digest mismatch) say why
        return Checked(what, False, _why(exc))
    return Checked(what, True, "signature verified")


def _why(exc: Exception) -> str:
    """model_signing's reason, short: which files changed, else the key did not sign it."""
    import re

    text = _first_line(exc)
    if "Signature mismatch" in text:
        changed = [("the signed file" if c == "." else c) for c in re.findall(r"Hash mismatch for '([^']*)'", text)]
        extra = re.findall(r"Extra files found in model '[^']*': ([^'\]]*)", text)
        missing = re.findall(r"Missing files in model '[^']*': ([^'\]]*)", text)
        parts = ([f"changed {', '.join(changed)}"] if changed else []) + [f"extra {x}" for x in extra] + \
            [f"missing {x}" for x in missing]
        return f"a signed file changed: {'; '.join(parts) or text[:200]}"
    return f"does not verify with this key ({type(exc).__name__}: {text[:200]})"


def _verify_envelope(out: Path, public_key: Any) -> Checked:
    try:
        envelope = json.loads((out / ENVELOPE).read_text())
        body = dsse_verify(envelope, public_key)
        signed = (out / "provenance.json").read_bytes()
    except FileNotFoundError as exc:
        return Checked(ENVELOPE, False, f"missing: {Path(exc.filename or ENVELOPE).name}")
    except ValueError as exc:
        return Checked(ENVELOPE, False, f"does not verify: {_first_line(exc)}")
    if body != signed:
        return Checked(ENVELOPE, False, "signed, but provenance.json was changed since")
    return Checked(ENVELOPE, True, "DSSE signature verified")
