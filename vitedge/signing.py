"""Signing and verifying artifacts with OpenSSF model-signing (key-based, offline).

An artifact folder is signed as a whole: ``ARTIFACT/model.sig`` is a Sigstore bundle (JSON) holding a DSSE
envelope over an in-toto statement that lists every other file of the folder (``manifest.json`` included) with
its SHA-256 ("files" serialization, no symlinks, only ``model.sig`` ignored). Keys are elliptic-curve PEM files:
P-256 (ECDSA/SHA-256), P-384 (SHA-384) or P-521 (SHA-512); :func:`generate_keypair` writes a P-256 pair.

The C++ runner checks the same file with OpenSSL (``Options::trusted_keys``); both sides also require that
every regular file in the folder other than ``model.sig`` is covered with a matching digest, that every covered
file exists, and that the folder holds no symlink. The model-signing library does the hashing and the
signature check; this module adds the one-line errors, the strict bundle/statement checks and the returned
digest map that :func:`vitedge.runtime.open_artifact` compares with the manifest.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from .errors import SignatureError, UsageError, first_line

__all__ = ["MAX_SIGNATURE_BYTES", "SIGNATURE", "check_private_key", "generate_keypair", "key_fingerprint",
           "sign_artifact", "verify_artifact"]

SIGNATURE = "model.sig"
MAX_SIGNATURE_BYTES = 16 * 2**20  # a bundle is a few KiB; same cap as a manifest
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
_PAYLOAD_TYPE = "application/vnd.in-toto+json"
_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
_PREDICATE_TYPE = "https://model_signing/signature/v1.0"


def _hashing_config():
    import model_signing
    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False)


def _public_pem(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint(public_key_path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the public key's SubjectPublicKeyInfo PEM: the ``hint`` model-signing writes in a bundle.

    Raises:
        UsageError: the file cannot be read or is not a P-256/P-384/P-521 public key in PEM.
    """
    return hashlib.sha256(_public_pem(_load_public_key(public_key_path))).hexdigest()


def _read_key_file(path: str | os.PathLike, what: str) -> bytes:
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{what} {p} is not a regular file")
        if st.st_size > 1 << 20:
            raise UsageError(f"{what} {p} is larger than 1 MiB; not a PEM key")
        return p.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {what} {p}: {e.strerror or e}") from None


def _check_curve(key, what: str, path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    pub = key.public_key() if hasattr(key, "public_key") and not isinstance(key, ec.EllipticCurvePublicKey) else key
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name not in _CURVES:
        kind = getattr(getattr(pub, "curve", None), "name", None) or type(pub).__name__
        raise UsageError(f"{what} {path} is a {kind} key; model-signing takes elliptic-curve P-256, P-384 or "
                         "P-521 keys (vitedge keygen writes P-256)")


def _load_public_key(path):
    from cryptography.hazmat.primitives import serialization
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        hint = " (that is a private key; pass the .pub.pem)" if b"PRIVATE KEY" in data else ""
        raise UsageError(f"public key {path} is not a PEM public key{hint}: {first_line(e, 120)}") from None
    _check_curve(key, "public key", path)
    return key


def _load_private_key(path, password: str | bytes | None):
    from cryptography.hazmat.primitives import serialization
    data = _read_key_file(path, "private key")
    pw = password.encode() if isinstance(password, str) else password
    try:
        key = serialization.load_pem_private_key(data, pw)
    except TypeError as e:  # encrypted without a password, or a password for a plain key
        raise UsageError(f"private key {path}: {first_line(e, 160)}") from None
    except ValueError as e:
        hint = " (that is a public key; pass the private .pem)" if b"PUBLIC KEY" in data else ""
        raise UsageError(f"private key {path} is not a PEM private key or the password is wrong{hint}: "
                         f"{first_line(e, 120)}") from None
    _check_curve(key, "private key", path)
    return key


def check_private_key(path: str | os.PathLike, password: str | bytes | None = None) -> None:
    """Raise UsageError unless ``path`` is a readable P-256/P-384/P-521 private key PEM (``password`` if encrypted)."""
    _load_private_key(path, password)


def generate_keypair(prefix: str | os.PathLike) -> tuple[Path, Path]:
    """Write a new P-256 key pair: ``PREFIX.pem`` (private, PKCS#8 PEM, unencrypted, mode 0600) and
    ``PREFIX.pub.pem`` (public, SubjectPublicKeyInfo PEM). Parent folders are created.

    Returns:
        (private key path, public key path).
    Raises:
        UsageError: either file already exists (nothing is overwritten) or cannot be written.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    prefix = Path(prefix)
    priv, pub = Path(f"{prefix}.pem"), Path(f"{prefix}.pub.pem")
    for p in (priv, pub):
        if p.exists() or p.is_symlink():
            raise UsageError(f"{p} exists; choose another prefix or remove it (keys are never overwritten)")
    key = ec.generate_private_key(ec.SECP256R1())
    priv_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    written = []
    try:
        priv.parent.mkdir(parents=True, exist_ok=True)
        for p, data, mode in ((priv, priv_pem, 0o600), (pub, _public_pem(key.public_key()), 0o644)):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
            written.append(p)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(p, mode)  # the umask may have narrowed it; never wider than asked
    except OSError as e:
        for p in written:
            p.unlink(missing_ok=True)
        raise UsageError(f"cannot write key pair {prefix}: {e.strerror or e}") from None
    return priv, pub


def _scan(directory: Path) -> set[str]:
    """POSIX relative names of every regular file below ``directory`` except ``model.sig``.
    Raises SignatureError on a symlink or a file that is not regular (FIFO, device, socket)."""
    names = set()
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            rel = p.relative_to(directory).as_posix()
            try:
                mode = p.lstat().st_mode
            except OSError as e:
                raise SignatureError(f"cannot stat {p}: {e.strerror or e}") from None
            if stat.S_ISLNK(mode):
                raise SignatureError(f"signed artifact {directory} holds a symlink ({rel}); refusing it")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise SignatureError(f"signed artifact {directory} holds {rel}, which is not a regular file")
            if rel != SIGNATURE:
                names.add(rel)
    return names


def sign_artifact(directory: str | os.PathLike, private_key: str | os.PathLike,
                  password: str | bytes | None = None) -> Path:
    """Sign every file of the artifact folder ``directory`` (manifest.json included) with the elliptic-curve
    private key PEM ``private_key``; writes ``directory/model.sig`` (replacing an older one).

    Returns:
        The path of ``model.sig``.
    Raises:
        UsageError: the key cannot be read, is not P-256/P-384/P-521, or is encrypted and ``password`` is wrong
            or missing.
        SignatureError: ``directory`` is not a folder, holds a symlink or a non-regular file, or signing failed.
    """
    import model_signing
    d = Path(directory)
    if not d.is_dir() or d.is_symlink():
        raise SignatureError(f"cannot sign {d}: not an artifact folder")
    _load_private_key(private_key, password)  # one-line errors for a bad key before model-signing sees it
    _scan(d)
    sig = d / SIGNATURE
    try:
        (model_signing.signing.Config()
         .use_elliptic_key_signer(private_key=Path(private_key),
                                  password=password.encode() if isinstance(password, str) else password)
         .set_hashing_config(_hashing_config())
         .sign(d, sig))
    except (ValueError, TypeError, OSError) as e:
        raise SignatureError(f"cannot sign {d}: {first_line(e, 200)}") from None
    return sig


def _read_signature(d: Path) -> bytes:
    """``d/model.sig``'s bytes: opened once, a regular file of at most MAX_SIGNATURE_BYTES (checked first)."""
    sig = d / SIGNATURE
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(sig, flags)
    except FileNotFoundError:
        raise SignatureError(f"{d} is not signed (no {SIGNATURE}); sign it with vitedge export --sign KEY.pem")
    except OSError as e:
        raise SignatureError(f"cannot open {sig}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SignatureError(f"{sig} is not a regular file")
        if st.st_size > MAX_SIGNATURE_BYTES:
            raise SignatureError(f"{sig} is larger than {MAX_SIGNATURE_BYTES} bytes; not a signature bundle")
        return f.read(MAX_SIGNATURE_BYTES + 1)


def _parse_bundle(raw: bytes, sig: Path) -> tuple[str, dict[str, str]]:
    """(public key hint, {relative name: sha256 hex}) of a model-signing bundle; SignatureError if malformed."""
    def bad(what: str):
        raise SignatureError(f"malformed signature {sig}: {what}")

    try:
        bundle = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        bad(f"not JSON ({first_line(e, 100)})")
    if not isinstance(bundle, dict) or not str(bundle.get("mediaType", "")).startswith(
            "application/vnd.dev.sigstore.bundle"):
        bad(f"not a Sigstore bundle (mediaType {_BUNDLE_MEDIA_TYPE})")
    hint = ((bundle.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint") \
        if isinstance(bundle.get("verificationMaterial"), dict) else None
    if not isinstance(hint, str) or not _HEX64.fullmatch(hint):
        bad("no public key hint (verificationMaterial.publicKey.hint); re-sign it with vitedge export --sign")
    env = bundle.get("dsseEnvelope")
    if not isinstance(env, dict) or env.get("payloadType") != _PAYLOAD_TYPE or not isinstance(env.get("payload"), str):
        bad(f"no DSSE envelope with an {_PAYLOAD_TYPE} payload")
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict) \
            or not isinstance(sigs[0].get("sig"), str):
        bad("the envelope does not hold exactly one signature")
    try:
        statement = json.loads(base64.b64decode(env["payload"], validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError) as e:
        bad(f"the payload is not base64 JSON ({first_line(e, 100)})")
    if not isinstance(statement, dict) or statement.get("_type") != _STATEMENT_TYPE \
            or statement.get("predicateType") != _PREDICATE_TYPE or not isinstance(statement.get("predicate"), dict):
        bad(f"the payload is not an in-toto statement of type {_PREDICATE_TYPE}")
    pred = statement["predicate"]
    ser = pred.get("serialization")
    want = {"method": "files", "hash_type": "sha256", "allow_symlinks": False, "ignore_paths": [SIGNATURE]}
    if not isinstance(ser, dict) or any(ser.get(k) != v for k, v in want.items()):
        bad(f"serialization {json.dumps(ser)[:160]} is not {json.dumps(want)}")
    res = pred.get("resources")
    if not isinstance(res, list):
        bad("no resources list")
    files: dict[str, str] = {}
    for r in res:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str) or r.get("algorithm") != "sha256" \
                or not isinstance(r.get("digest"), str) or not _HEX64.fullmatch(r["digest"]):
            bad("a resource is not {name, sha256 digest (64 hex)}")
        name = r["name"]
        if name in files or name.startswith("/") or ".." in name.split("/") or name == SIGNATURE:
            bad(f"resource name {name[:80]!r} is duplicated, absolute, escapes the folder or is {SIGNATURE}")
        files[name] = r["digest"]
    return hint, files


def verify_artifact(directory: str | os.PathLike, public_keys) -> dict:
    """Check ``directory/model.sig`` against the trusted elliptic-curve public key PEM files ``public_keys``.

    Checked, in order: the bundle is a regular file of at most 16 MiB, well formed, names the files
    serialization over SHA-256 with no symlinks and only ``model.sig`` ignored; its key hint matches one of
    ``public_keys``; the folder holds no symlink or non-regular file, no file the signature does not cover and
    every file it covers; then model-signing checks the ECDSA signature and every file's SHA-256. The bundle
    is read once and the digest map returned is parsed from the same bytes that were verified.

    Args:
        directory: the artifact folder.
        public_keys: a path or a list of paths of PEM public keys (P-256, P-384 or P-521).
    Returns:
        ``{"key": str (the path of the key that verified), "fingerprint": sha256 hex of that key,
        "files": {relative POSIX name: sha256 hex} (manifest.json included, model.sig not)}``.
    Raises:
        UsageError: no key given, or a key file that is unreadable or not a supported public key.
        SignatureError: no model.sig, a malformed bundle, a signature by another key, a tampered, added or
            missing file, a symlink; one line naming it.
    """
    import model_signing
    from cryptography.exceptions import InvalidSignature
    d = Path(directory)
    keys = [public_keys] if isinstance(public_keys, (str, os.PathLike)) else list(public_keys or [])
    if not keys:
        raise UsageError("no trusted public key given (--key PUB.pem)")
    prints = {key_fingerprint(k): k for k in keys}
    if not d.is_dir():
        raise SignatureError(f"artifact not found: {d}")
    raw = _read_signature(d)
    hint, files = _parse_bundle(raw, d / SIGNATURE)
    key = prints.get(hint)
    if key is None:
        raise SignatureError(f"{d / SIGNATURE} is signed by another key (fingerprint {hint[:16]}), not by "
                             f"{'any of ' if len(keys) > 1 else ''}{', '.join(str(k) for k in keys)}")
    present = _scan(d)
    extra, missing = sorted(present - set(files)), sorted(set(files) - present)
    if extra:
        raise SignatureError(f"signed artifact {d} holds {extra[0]!r}, which the signature does not cover "
                             f"(added after signing){f' and {len(extra) - 1} more' if len(extra) > 1 else ''}")
    if missing:
        raise SignatureError(f"signed artifact {d} lacks {missing[0]!r}, which the signature covers")
    tmp = Path(tempfile.mkdtemp(prefix="vitedge-sig-"))  # verify the very bytes parsed above
    try:
        copy = tmp / SIGNATURE
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        (model_signing.verifying.Config().use_elliptic_key_verifier(public_key=Path(key))
         .set_hashing_config(_hashing_config()).verify(d, copy))
    except InvalidSignature:
        raise SignatureError(f"{d / SIGNATURE} does not verify with {key}: the signed statement was altered or "
                             "the signature is not this key's") from None
    except (ValueError, KeyError, TypeError, OSError) as e:
        msg = str(e)
        m = re.search(r"Hash mismatch for \\*'([^'\\]+)\\*'", msg)  # the list's repr may escape the quotes
        if m:
            raise SignatureError(f"signed artifact {d}: {m.group(1)} does not match its signed SHA-256 (modified "
                                 "after signing)") from None
        if "symlink" in msg:
            raise SignatureError(f"signed artifact {d} holds a symlink; refusing it") from None
        raise SignatureError(f"{d / SIGNATURE} does not verify with {key}: {first_line(e, 200)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"key": str(key), "fingerprint": hint, "files": files}
