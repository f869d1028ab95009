"""`vitedge bench --on ssh://...` (vitedge/remote.py) against a real OpenSSH server started by the test on 127.0.0.1.

The server (`/usr/sbin/sshd -D -e -f CONFIG`, Debian's openssh-server) runs as the current user on a free port with
a throwaway host key and user key made by ssh-keygen; the client pins that host key in a known_hosts file of its
own. Skipped, with the reason, when sshd is missing or does not start; the tests that run the C++ runner also
when it is not built (`make cpp`; `make test` builds it first). The device is this machine, so the tests look at its temporary folder
directly to check that nothing is left behind.
"""
from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from helpers import SMALL
from vitedge import remote
from vitedge.cli import main
from vitedge.errors import AuthRefusedError, HostUnreachableError, RemoteError, RuntimeMissingError, UsageError
from vitedge.export import export
from vitedge.machine import machine_info
from vitedge.models.zoo import family_class
from vitedge.signing import generate_keypair, sign_artifact

SSHD = Path("/usr/sbin/sshd")
BUILD = remote.build_dir(remote.host_arch())
CPP_BENCH = BUILD / "cpp" / "vitedge-bench"

needs_runner = pytest.mark.skipif(not CPP_BENCH.is_file(), reason=f"C++ runner not built ({CPP_BENCH}; make cpp)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vitedge-test", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A throwaway OpenSSH server on 127.0.0.1: ``{"url", "options", "port", "dir"}`` (options: the ssh -o list
    that logs in with the test's key and trusts only the test's host key)."""
    if not SSHD.is_file() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server or client not installed (Debian: openssh-server; make sysdeps installs it)")
    d = tmp_path_factory.mktemp("sshd")
    host_key, user_key = _keygen(d / "host_key"), _keygen(d / "user_key")
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nMaxStartups 50\n")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():  # sshd's privilege-separation folder, made by its service
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError as e:
            pytest.skip(f"sshd cannot start: no /run/sshd and it cannot be made ({e})")
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            pytest.skip(f"sshd cannot start: {(d / 'sshd.log').read_text().strip()[-300:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.skip("sshd did not listen within 10 s")
            time.sleep(0.1)
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    options = [f"IdentityFile={user_key}", "IdentitiesOnly=yes", f"UserKnownHostsFile={d / 'known_hosts'}",
               "StrictHostKeyChecking=yes", "GlobalKnownHostsFile=/dev/null"]
    yield {"url": f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "options": options, "port": port, "dir": d}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A small ViT exported to ONNX (the tests' small config; ONNX Runtime is the cheapest backend to send)."""
    _, _, kw, size = SMALL["vit"]
    torch.manual_seed(0)
    model = family_class("vit")(**kw).eval()
    return export(model, torch.zeros(2, 3, *size), "onnx", tmp_path_factory.mktemp("remote") / "vit-onnx").path


@pytest.fixture
def base(tmp_path):
    """The device's folder for the run's temporary folder (on this machine: the device is 127.0.0.1)."""
    b = tmp_path / "device-tmp"
    b.mkdir()
    return b


def _gone(base: Path, seconds: float = 0.0) -> bool:
    deadline = time.monotonic() + seconds
    while os.listdir(base) and time.monotonic() < deadline:
        time.sleep(0.1)
    return os.listdir(base) == []


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vitedge: error: ") and "Traceback" not in err, err
    return lines[0]


@needs_runner
def test_bench_on_the_loopback_server(sshd, artifact, base, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", str(artifact), "--on", sshd["url"], "--remote-tmp", str(base), "--iters", "20",
                 "--warmup", "2", "--threads", "1", "--json", str(out), "-q",
                 *[a for o in sshd["options"] for a in ("--ssh-option", o)]]) == 0
    r = json.loads(out.read_text())
    assert r["artifact"] == str(artifact) and r["runtime"] == "onnxruntime-cpp" and r["device"] == "cpu"
    assert (r["batch"], r["threads"], r["warmup"], r["iters"]) == (1, 1, 2, 20)
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["throughput_ips"] == pytest.approx(1 / (lat["mean"] / 1e3))
    here = machine_info()
    dev = r["remote"]
    assert dev["url"] == sshd["url"] and dev["host"] == "127.0.0.1"
    assert (dev["arch"], dev["cpu"], dev["flags"]) == (remote.host_arch(), here["cpu"], here["flags"])
    assert r["machine"]["cpu"] == here["cpu"] and r["machine"]["flags"] == here["flags"]  # the runner's own report
    assert dev["sent_mb"] > r["artifact_mb"]  # runner, core library and ONNX Runtime went along
    assert _gone(base), os.listdir(base)


@needs_runner
def test_tampered_artifact_is_refused_on_the_device_and_nothing_is_left(sshd, artifact, base, tmp_path):
    bad = tmp_path / "tampered"
    shutil.copytree(artifact, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(RemoteError, match=r"on ssh://.*vitedge-bench: error: .*model\.onnx does not match"):
        remote.bench_remote(bad, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base), iters=2)
    assert _gone(base), os.listdir(base)


@needs_runner
def test_interrupt_removes_the_remote_folder(sshd, artifact, base):
    """SIGTERM here (as Ctrl-C: a KeyboardInterrupt) in the middle of a long run: the run there ends, its folder
    goes."""
    def interrupt():
        deadline = time.monotonic() + 30
        while not os.listdir(base) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)  # bench_remote turns it into KeyboardInterrupt while it runs
    def ignore(signum, frame):  # a SIGTERM arriving after bench_remote returned must not end pytest
        pass
    before = signal.signal(signal.SIGTERM, ignore)
    t = threading.Thread(target=interrupt)
    try:
        t.start()
        with pytest.raises(KeyboardInterrupt):
            remote.bench_remote(artifact, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base),
                                iters=10_000_000, warmup=0, threads=1)
        t.join()
        assert signal.getsignal(signal.SIGTERM) is ignore  # bench_remote put the handler back
    finally:
        t.join()
        signal.signal(signal.SIGTERM, before)
    assert _gone(base), os.listdir(base)


@needs_runner
def test_dropped_connection_cleans_up_on_the_device(sshd, artifact, base, monkeypatch):
    """The ssh process dies mid-run and this side does not clean up: the device's own trap and watchdog do."""
    monkeypatch.setattr(remote, "_remote_cleanup", lambda ssh, run: None)
    runs = []

    class Recorded(remote._Run):
        def __init__(self, argv):
            super().__init__(argv)
            runs.append(self)
    monkeypatch.setattr(remote, "_Run", Recorded)

    def drop():
        deadline = time.monotonic() + 30
        while not (runs and runs[0].bench_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        if runs:
            runs[0].proc.kill()
    t = threading.Thread(target=drop)
    t.start()
    with pytest.raises(RemoteError, match="lost the connection to ssh://.* during the run"):
        remote.bench_remote(artifact, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base),
                            iters=10_000_000, warmup=0, threads=1)
    t.join()
    assert _gone(base, seconds=15), os.listdir(base)  # the watchdog's heartbeat (every 2 s) finds the pipe closed


def test_unreachable_port_is_one_line(sshd, artifact, capsys):
    port = _free_port()
    assert main(["bench", str(artifact), "--on", f"ssh://127.0.0.1:{port}", "-q"]) == 1
    line = _one_line(capsys)
    assert line.startswith(f"vitedge: error: cannot reach ssh://127.0.0.1:{port}: ") and "refused" in line
    with pytest.raises(HostUnreachableError):
        remote.bench_remote(artifact, f"ssh://127.0.0.1:{port}")


def test_wrong_key_is_auth_refused(sshd, artifact, tmp_path, capsys):
    other = _keygen(tmp_path / "other_key")
    options = [f"IdentityFile={other}"] + [o for o in sshd["options"] if not o.startswith("IdentityFile=")]
    assert main(["bench", str(artifact), "--on", sshd["url"], "-q",
                 *[a for o in options for a in ("--ssh-option", o)]]) == 1
    line = _one_line(capsys)
    assert f"{sshd['url']} refused the login (" in line and "Permission denied" in line
    with pytest.raises(AuthRefusedError):
        remote.bench_remote(artifact, sshd["url"], ssh_options=options)


@needs_runner
def test_architecture_without_a_build(sshd, artifact, base):
    with pytest.raises(RuntimeMissingError, match="no vitedge-bench build for riscv64, the device's architecture"):
        remote.bench_remote(artifact, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base), arch="riscv64")
    # a prefix built for another architecture than the device's is refused by its ELF header
    prefix = remote.runner_prefix(remote.host_arch())
    other = "aarch64" if remote.host_arch() != "aarch64" else "x86_64"
    with pytest.raises(RuntimeMissingError, match=f"vitedge-bench built for {remote.host_arch()}; the device is {other}"):
        remote.bench_remote(artifact, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base), arch=other,
                            runner_prefix_dir=prefix)
    assert _gone(base)


@needs_runner
def test_runtime_missing_from_the_runner(sshd, artifact, base, tmp_path):
    """A runner prefix without the artifact's backend folder (as a build without ONNX Runtime, or TensorRT)."""
    full = remote.runner_prefix(remote.host_arch())
    bare = tmp_path / "prefix"
    (bare / "bin").mkdir(parents=True)
    shutil.copy2(full / "bin" / "vitedge-bench", bare / "bin")
    shutil.copytree(full / "lib", bare / "lib", symlinks=True,
                    ignore=lambda d, names: [n for n in names if n == "backends"])
    with pytest.raises(RuntimeMissingError, match=r"has no onnxruntime backend \(lib/vitedge/backends/onnxruntime/\)"):
        remote.bench_remote(artifact, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base),
                            runner_prefix_dir=bare)


def test_aarch64_build_under_qemu(sshd, tmp_path, base):
    """The arm64 cross build (make arm64) on the loopback server, run by qemu-aarch64 as the device's command
    prefix (the device says x86_64, so the architecture is given). ExecuTorch is the arm64 build's small backend."""
    arm = remote.build_dir("aarch64")
    if remote.host_arch() == "aarch64":
        pytest.skip("this machine is aarch64: the loopback test above already ran the aarch64 build")
    if not (arm / "cpp" / "vitedge-bench").is_file():
        pytest.skip(f"no arm64 cross build ({arm}; make arm64 builds it)")
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed (qemu-user)")
    prefix = remote.runner_prefix("aarch64")
    if not (prefix / "lib" / "vitedge" / "backends" / "executorch").is_dir():
        pytest.skip("the arm64 build has no ExecuTorch backend (EXECUTORCH=0)")
    pytest.importorskip("executorch")
    _, _, kw, size = SMALL["vit"]
    torch.manual_seed(0)
    art = export(family_class("vit")(**kw).eval(), torch.zeros(1, 3, *size), "executorch", tmp_path / "pte").path
    sysroot = arm.parent / "arm64-deps" / "sysroot"  # arm64 libssl3/zlib of make arm64 (libcrypto.so.3)
    libs = ":".join(str(sysroot / p) for p in ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu"))
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if binfmt.is_file() and binfmt.read_text().startswith("enabled"):  # the kernel starts qemu for aarch64 ELFs
        wrapper = ("env", "QEMU_LD_PREFIX=/usr/aarch64-linux-gnu", f"LD_LIBRARY_PATH={libs}")
    else:  # qemu-aarch64 directly, as scripts/arm64_qemu.sh runs the build
        wrapper = ("qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", "-E", f"LD_LIBRARY_PATH={libs}")
    r = remote.bench_remote(art, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base), arch="aarch64",
                            wrapper=wrapper, iters=3, warmup=1, threads=1, timeout=300)
    assert r["runtime"] == "executorch-cpp" and r["latency_ms"]["p50"] > 0 and r["remote"]["arch"] == "aarch64"
    assert r["machine"]["arch"] == "aarch64"  # the runner's own uname under qemu-user
    assert _gone(base)


@pytest.mark.parametrize("url, msg", [
    ("http://host", "--on takes ssh://"), ("ssh://", "--on takes ssh://"), ("ssh://host:99999", "port"),
    ("ssh://host/path", "no path"), ("ssh://u:pw@host", "no path, query or password"),
    ("ssh://-oProxyCommand=x", "not a host name"),
])
def test_bad_urls(url, msg):
    with pytest.raises(UsageError, match=msg):
        remote.parse_url(url)


def test_good_urls():
    assert remote.parse_url("ssh://pi@raspberrypi.local") == remote.SshTarget("pi", "raspberrypi.local", None)
    assert remote.parse_url("ssh://jetson:2222") == remote.SshTarget(None, "jetson", 2222)
    t = remote.parse_url("ssh://me@[::1]:22")
    assert (t.host, t.port, t.label) == ("::1", 22, "ssh://me@[::1]:22")


def test_on_refuses_photo_options(artifact, capsys):
    assert main(["bench", str(artifact), "--on", "ssh://127.0.0.1:1", "--input-size", "32", "48"]) == 2
    assert "do not apply with --on" in _one_line(capsys)
    assert main(["bench", str(artifact), "--ssh-option", "Port=22"]) == 2
    assert "go with --on" in _one_line(capsys)


@needs_runner
def test_runtime_missing_on_the_device(sshd, artifact, base, tmp_path):
    """What the device lacks is named in one line: the command prefix (a qemu that is not installed there), a
    library the runner links (libvitedge.so left out of the prefix sent)."""
    with pytest.raises(RuntimeMissingError, match=r"on ssh://.*: cannot run vitedge-bench there: .*"
                                                  r"qemu-aarch64-not-installed.*not found"):
        remote.bench_remote(artifact, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base),
                            wrapper=("qemu-aarch64-not-installed",), iters=2)
    assert _gone(base)
    full = remote.runner_prefix(remote.host_arch())
    nolib = tmp_path / "prefix"
    (nolib / "lib" / "vitedge" / "backends").mkdir(parents=True)
    (nolib / "bin").mkdir()
    shutil.copy2(full / "bin" / "vitedge-bench", nolib / "bin")
    (nolib / "lib" / "vitedge" / "backends" / "onnxruntime").symlink_to(full / "lib" / "vitedge" / "backends" /
                                                                         "onnxruntime")
    with pytest.raises(RuntimeMissingError, match=r"on ssh://.*: libvitedge\.so is missing there"):
        remote.bench_remote(artifact, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base),
                            runner_prefix_dir=nolib, iters=2)
    assert _gone(base)


@needs_runner
def test_signed_artifact_is_checked_with_the_keys_sent(sshd, artifact, base, tmp_path):
    """--key files travel with the artifact; the device's runner checks model.sig with them."""
    signed = tmp_path / "signed"
    shutil.copytree(artifact, signed)
    priv, pub = generate_keypair(tmp_path / "k")
    sign_artifact(signed, priv)
    r = remote.bench_remote(signed, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base), iters=2,
                            trusted_keys=[pub])
    assert r["latency_ms"]["p50"] > 0
    _, other = generate_keypair(tmp_path / "other")
    with pytest.raises(RemoteError, match=r"vitedge-bench: error: signature .* does not verify with any trusted key"):
        remote.bench_remote(signed, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base), iters=2,
                            trusted_keys=[other])
    assert _gone(base)


@needs_runner
def test_broken_transfer_is_one_line_and_leaves_nothing(sshd, artifact, base, monkeypatch):
    """Bytes that are not the tar stream (a transfer cut or garbled): the device's tar refuses, the folder goes."""
    monkeypatch.setattr(remote, "_write_tar", lambda stream, items: stream.write(b"not a tar stream\n" * 64))
    with pytest.raises(RemoteError, match=r"on ssh://.*: the files did not arrive whole \(tar failed\): tar: "):
        remote.bench_remote(artifact, sshd["url"], ssh_options=sshd["options"], remote_tmp=str(base), iters=2)
    assert _gone(base)


@needs_runner
def test_sweep_times_on_the_loopback_server(sshd, tmp_path):
    """vitedge sweep --on ssh://...: the timing cells run through bench --on (the device's C++ runner) and that
    device gets its own leaderboard and pick (clean-up on the device: the bench tests above)."""
    out = tmp_path / "sweep"
    assert main(["sweep", "--presets", "sweeptoy_16", "--plugin", "sweep_toy", "--image-size", "16", "16",
                 "--epochs", "2", "--targets", "onnx", "--precisions", "fp32", "--jobs", "1", "--warmup", "2",
                 "--iters", "10", "--threads", "1", "--on", "local", sshd["url"], "--max-drop", "100", "-q",
                 "-o", str(out), *[a for o in sshd["options"] for a in ("--ssh-option", o)]]) == 0
    boards = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/leaderboard.json")}
    assert len(boards) == 2 and "local" in boards
    board = next(b for name, b in boards.items() if name != "local")
    (row,) = board["rows"]
    assert row["target"] == "onnx" and row["picked"] and row["p50_ms"] > 0
    assert row["runtime"] == "onnxruntime-cpp"  # the device's C++ runner timed it, not this process
