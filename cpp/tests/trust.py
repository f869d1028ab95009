"""Signatures and the trust rule in the C++ runner (vitedge-bench, classify), against real model-signing bundles.

trust.py --fixtures DIR --bench PATH/vitedge-bench --classify PATH/classify --workdir DIR

The fixtures (make_fixtures.py) are signed with OpenSSF model-signing (model.sig) by a throwaway P-256 key,
DIR/keys/pub.pem. Checked here:
1. Signed TorchScript and AOTInductor artifacts load with --key (vitedge-bench and classify); several keys, one of
   them right, load too; P-384 and P-521 keys work.
2. Without --key, a TorchScript / AOTInductor artifact is refused with the one-line message of the trust rule
   (convention 2) unless --trust-code.
3. With --key, everything else is refused with one line, exit 1: wrong key, a P-384 signature checked with a P-256
   key, a tampered model file (also with --no-verify), model file + manifest rewritten with recomputed hashes, an
   extra file, a missing signed file, a symlink in the folder, no model.sig, a corrupt bundle (not JSON, wrong
   mediaType, truncated base64 payload or signature, altered signature), and statements properly signed by the
   right key but not what vitedge signs (predicateType, serialization method, a resource named ../x).
4. Zip-slip: a .pt2 with a ../ member is refused before libtorch extracts it (also when correctly signed), and no
   file appears outside; a .pt2 libtorch cannot load leaves no private copy in $TMPDIR.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

from _common import Failure, error_line_problems, load_json, main, make_keypair, run, sign_artifact


def rehash(art: Path) -> None:
    m = load_json(art / "manifest.json")
    for name in m["files"]:
        data = (art / name).read_bytes()
        m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (art / "manifest.json").write_text(json.dumps(m, indent=2))


def dsse_bundle(statement: dict, private_key: Path) -> str:
    """A model-signing-shaped bundle around STATEMENT, signed (ECDSA P-256/SHA-256 over the DSSE PAE) by KEY."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = serialization.load_pem_private_key(private_key.read_bytes(), None)
    payload = json.dumps(statement).encode()
    ptype = b"application/vnd.in-toto+json"
    pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
    sig = key.sign(pae, ec.ECDSA(hashes.SHA256()))
    return json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                       "verificationMaterial": {"publicKey": {"hint": ""}, "tlogEntries": []},
                       "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": ptype.decode(),
                                        "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}]}})


def statement_of(art: Path) -> dict:
    bundle = load_json(art / "model.sig")
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def test(args) -> None:
    fx, exe, classify = Path(args.fixtures), args.bench, args.classify
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pub = fx / "keys" / "pub.pem"
    priv = fx / "keys" / "key.pem"
    ts, aoti = fx / "torchscript", fx / "aotinductor"
    photo = sorted((fx / "photos").glob("*.jpg"))[0]
    _, other_pub = make_keypair(work / "other")
    p384_priv, p384_pub = make_keypair(work / "p384", "P-384")
    p521_priv, p521_pub = make_keypair(work / "p521", "P-521")
    fast = ["--iters", 1, "--warmup", 0, "--threads", 1]
    failures: list[str] = []

    def ok(name, argv, prog=exe):
        r = run([prog, *argv], timeout=300)
        good = r.returncode == 0
        print(f"{'ok  ' if good else 'FAIL'} {name}: exit {r.returncode}{'' if good else ': ' + r.stderr.strip()}")
        if not good:
            failures.append(name)

    def refused(name, argv, phrase, prog=exe, prefix="vitedge-bench: error: "):
        r = run([prog, *argv], timeout=300)
        problems = error_line_problems(r, 1, phrase, prefix)
        line = r.stderr.strip().splitlines()[0] if r.stderr.strip() else "(no stderr)"
        print(f"{'ok  ' if not problems else 'FAIL'} {name}: {line}")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")

    def copy(name, src=ts) -> Path:
        d = work / name
        shutil.copytree(src, d)
        return d

    # 1. Signed artifacts load with the key.
    for art in (ts, aoti):
        ok(f"signed {art.name} with --key", [art, "--key", pub, *fast])
    ok("classify --key", ["--key", pub, ts, photo], prog=classify)
    ok("two keys, the second right", [ts, "--key", other_pub, "--key", pub, *fast])
    for curve, k_priv, k_pub in (("P-384", p384_priv, p384_pub), ("P-521", p521_priv, p521_pub)):
        d = copy(f"signed_{curve}")
        sign_artifact(d, k_priv)
        ok(f"{curve} signature with its key", [d, "--key", k_pub, *fast])
    refused("P-384 signature, P-256 key", [work / "signed_P-384", "--key", pub, *fast],
            "does not verify with any trusted key")

    # 2. The trust rule without keys.
    msg = ("refusing to load torchscript artifact {}: its TorchScript file runs code when it is loaded and it is not "
           "signed by a trusted key; pass --key PUB.pem to check its signature, or --trust-code if you trust its source")
    refused("unsigned use of TorchScript, no flag", [ts, *fast], msg.format(ts))
    refused("AOTInductor, no flag", [aoti, *fast], f"refusing to load aotinductor artifact {aoti}: its AOTInductor "
            "package runs code when it is loaded")
    refused("classify TorchScript, no flag", [ts, photo], msg.format(ts), prog=classify, prefix="classify: error: ")
    ok("--trust-code", [ts, "--trust-code", *fast])
    ok("classify --trust-code", ["--trust-code", ts, photo], prog=classify)

    # 3. Refusals with --key.
    refused("wrong key", [ts, "--key", other_pub, *fast], "does not verify with any trusted key")
    d = copy("tampered_model")
    data = bytearray((d / "model.pt").read_bytes())
    data[len(data) // 3] ^= 1
    (d / "model.pt").write_bytes(bytes(data))
    refused("tampered model.pt", [d, "--key", pub, *fast], "does not match its manifest")
    refused("tampered model.pt, --no-verify", [d, "--key", pub, "--no-verify", *fast], "does not match its signature")
    rehash(d)
    refused("model.pt and manifest rewritten (hashes recomputed)", [d, "--key", pub, *fast],
            "manifest.json of")
    d = copy("extra_file")
    (d / "notes.txt").write_text("added after signing\n")
    refused("extra file", [d, "--key", pub, *fast], "holds 'notes.txt', which its signature does not cover")
    d = copy("missing_file")
    (d / "notes.txt").write_text("signed\n")
    sign_artifact(d, priv)
    (d / "notes.txt").unlink()
    refused("signed file missing", [d, "--key", pub, *fast], "lacks 'notes.txt', which its signature covers")
    d = copy("symlink_inside")
    os.symlink("model.pt", d / "alias.pt")
    refused("symlink in a signed folder", [d, "--key", pub, *fast], "holds a symlink 'alias.pt'")
    d = copy("no_sig")
    (d / "model.sig").unlink()
    refused("no model.sig", [d, "--key", pub, *fast], "has no signature (model.sig)")
    d = copy("sig_not_json")
    (d / "model.sig").write_text('{"mediaType": ')
    refused("model.sig not JSON", [d, "--key", pub, *fast], "is not valid JSON")
    bundle = load_json(ts / "model.sig")

    def with_bundle(name, edit) -> Path:
        dd = copy(name)
        b = json.loads(json.dumps(bundle))
        edit(b)
        (dd / "model.sig").write_text(json.dumps(b))
        return dd
    refused("wrong mediaType", [with_bundle("media", lambda b: b.update(mediaType="application/json")), "--key", pub,
                                *fast], "has mediaType")
    refused("truncated base64 payload",
            [with_bundle("trunc_payload", lambda b: b["dsseEnvelope"].update(payload=b["dsseEnvelope"]["payload"][:-1])),
             "--key", pub, *fast], "payload is not valid base64")
    refused("truncated base64 signature",
            [with_bundle("trunc_sig", lambda b: b["dsseEnvelope"]["signatures"][0].update(
                sig=b["dsseEnvelope"]["signatures"][0]["sig"][:-2])), "--key", pub, *fast], "not valid base64")

    def alter_sig(b):
        raw = bytearray(base64.b64decode(b["dsseEnvelope"]["signatures"][0]["sig"]))
        raw[-3] ^= 0x40
        b["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    refused("altered signature", [with_bundle("altered_sig", alter_sig), "--key", pub, *fast],
            "does not verify with any trusted key")

    def alter_payload(b):  # a resource digest changed inside the signed payload, signature left as is
        st = json.loads(base64.b64decode(b["dsseEnvelope"]["payload"]))
        st["predicate"]["resources"][0]["digest"] = "0" * 64
        b["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    refused("payload edited, signature kept", [with_bundle("altered_payload", alter_payload), "--key", pub, *fast],
            "does not verify with any trusted key")
    st0 = statement_of(ts)
    for name, edit, phrase in (
            ("predicateType", lambda s: s.update(predicateType="https://example.com/other"), "predicateType is not"),
            ("serialization method", lambda s: s["predicate"]["serialization"].update(method="shards"),
             "serialization method is not \"files\""),
            ("resource ../x", lambda s: s["predicate"]["resources"].append(
                {"name": "../x", "digest": "0" * 64, "algorithm": "sha256"}), "is not a safe relative path")):
        dd = copy(f"crafted_{name.replace(' ', '_').replace('/', '_')}")
        s = json.loads(json.dumps(st0))
        edit(s)
        (dd / "model.sig").write_text(dsse_bundle(s, priv))
        refused(f"signed statement with a bad {name}", [dd, "--key", pub, *fast], phrase)
    dd = copy("crafted_ok")
    (dd / "model.sig").write_text(dsse_bundle(st0, priv))
    ok("the same statement re-signed by the test's own DSSE code", [dd, "--key", pub, *fast])
    refused("key file is not PEM", [ts, "--key", fx / "notes.txt", *fast], "is not a PEM public key")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    rsa_pub = work / "rsa_pub.pem"
    rsa_pub.write_bytes(rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    refused("RSA key", [ts, "--key", rsa_pub, *fast], "is not an elliptic-curve key")
    refused("missing key file", [ts, "--key", work / "nope.pem", *fast], "cannot open public key")

    # 4. Zip-slip in a real .pt2, and cleanup of the private copy.
    evil = work / "evil_outside.txt"
    d = copy("pt2_zip_slip", aoti)
    buf = io.BytesIO((d / "model.pt2").read_bytes())
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr("model/../../../evil_outside.txt", b"written outside\n")
    (d / "model.pt2").write_bytes(buf.getvalue())
    rehash(d)
    refused(".pt2 with a ../ member (--trust-code)", [d, "--trust-code", *fast], "escapes its folder ('..')")
    sign_artifact(d, priv)
    refused(".pt2 with a ../ member, correctly signed", [d, "--key", pub, *fast], "escapes its folder ('..')")
    if evil.exists() or (work.parent / "evil_outside.txt").exists():
        failures.append("a refused .pt2 wrote a file outside its folder")
    tmp = work / "tmp"
    tmp.mkdir()
    d = copy("pt2_not_a_package", aoti)
    (d / "model.pt2").write_bytes((ts / "model.pt").read_bytes())  # a valid zip, not an AOTInductor package
    rehash(d)
    r = run(["env", f"TMPDIR={tmp}", exe, d, "--trust-code", *fast], timeout=300)
    left = [p.name for p in tmp.iterdir() if p.name.startswith("vitedge-aoti-")]
    print(f"{'ok  ' if r.returncode == 1 and not left else 'FAIL'} failed .pt2 load: exit {r.returncode}, "
          f"private copies left in TMPDIR: {left}")
    if r.returncode != 1 or left:
        failures.append("failed .pt2 load")

    if failures:
        raise Failure(f"{len(failures)} trust case(s) failed: " + " | ".join(failures))
    print("all trust cases OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", required=True, type=Path)
    ap.add_argument("--bench", required=True, type=Path)
    ap.add_argument("--classify", required=True, type=Path)
    ap.add_argument("--workdir", required=True, type=Path)
    main(lambda: test(ap.parse_args()))
