"""On-device benchmarking over SSH: ``vitedge bench ARTIFACT --on ssh://user@host[:port]``.

The artifact is timed by the C++ runner (``vitedge-bench``) on the device itself, and the same bench JSON comes
back. One run:

1. **Probe** (one ``ssh`` command, nothing written there): ``uname -m`` picks the build (x86_64 or aarch64), and
   ``/proc/cpuinfo`` gives the device's CPU model and ISA flags (parsed here by :func:`vitedge.machine.parse_cpuinfo`).
2. **Stage** (here, once per build): ``cmake --install`` of the build into a cached, relocatable prefix
   (:func:`staged_prefix`); or an installed prefix the user names (``runner_prefix``, ``VITEDGE_BENCH_PREFIX_<ARCH>``).
3. **Send and run** (one ``ssh`` command): a tar stream of ``bin/vitedge-bench``, ``lib/libvitedge.so*``, the one
   backend folder the artifact's manifest needs (``lib/vitedge/backends/<name>/``), the artifact's files (and the
   ``--key`` public keys) is unpacked into a fresh ``mktemp -d`` folder; ``vitedge-bench`` checks every SHA-256 of
   the artifact there (unless ``verify=False``) and times it.
4. **Clean up**: the remote shell removes its folder on every exit (a ``trap`` on EXIT, HUP, INT, TERM, PIPE); a
   watchdog there kills the run when the connection is gone (its heartbeat on stderr fails), so a dropped
   connection also cleans up; and on any failure or Ctrl-C here, a second ``ssh`` command removes the folder and
   ends the run if the first did not report it gone.

SSH is OpenSSH's own client (``ssh``, as a subprocess), with ``BatchMode=yes`` (never a password prompt),
``ConnectTimeout`` and the user's ``~/.ssh/config``; ``ssh_options`` come first on the command line, so they win
over those defaults (for ssh the first value of an option counts).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import progress
from .errors import (ArtifactError, AuthRefusedError, HostUnreachableError, RemoteError, RuntimeMissingError,
                     UsageError, first_line)
from .machine import parse_cpuinfo
from .manifest import MANIFEST, artifact_folder, read_manifest
from .signing import SIGNATURE

__all__ = ["SshTarget", "bench_remote", "parse_url", "runner_prefix", "staged_prefix", "elf_arch"]

REPO = Path(__file__).resolve().parents[1]
#: ``uname -m`` -> the architecture name builds are kept under
ARCH_NAMES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
#: ELF ``e_machine`` -> architecture (to check that a prefix holds a runner for the device)
ELF_MACHINES = {62: "x86_64", 183: "aarch64", 40: "arm", 243: "riscv64", 3: "i386"}
#: manifest ``backend`` -> the runner's backend folder (``lib/vitedge/backends/<folder>``; see docs/cpp-runner.md)
BACKEND_FOLDERS = {"onnxruntime": "onnxruntime", "libtorch": "torch", "executorch": "executorch",
                   "openvino": "openvino", "tensorrt": "tensorrt"}
CONNECT_TIMEOUT_S = 10
_MARK = "@@vitedge"
_DIR_RE = re.compile(r"^/(?:[^/\0]+/)*vitedge-bench\.[A-Za-z0-9]{8}$")

# The device's side of the probe: prints sections separated by a marker line; writes nothing.
_PROBE = r"""
b=${1:-${TMPDIR:-/tmp}}
uname -m; echo @@vitedge@@
(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null); echo @@vitedge@@
uname -sr; echo @@vitedge@@
(tr -d '\000' </proc/device-tree/model) 2>/dev/null; echo; echo @@vitedge@@
(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1); echo @@vitedge@@
for c in sh tar mktemp rm; do command -v $c >/dev/null 2>&1 || echo $c; done; echo @@vitedge@@
echo "$b"; if [ -d "$b" ] && [ -w "$b" ]; then echo ok; fi; echo @@vitedge@@
cat /proc/cpuinfo 2>/dev/null
"""

# The device's side of a run: $1 the base folder ('' = $TMPDIR or /tmp), then the command (paths relative to the
# run's folder). Markers on stderr tell this side the folder, the pids, and whether the folder is gone.
_RUN = r"""
b=${1:-${TMPDIR:-/tmp}}; shift
umask 077
d=$(mktemp -d "$b/vitedge-bench.XXXXXXXX") || { echo "@@vitedge-fail cannot create a temporary folder in $b" >&2; exit 97; }
p=; w=
cleanup() {
  [ -n "$w" ] && kill "$w" 2>/dev/null
  if [ -n "$p" ]; then kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; fi
  cd / && rm -rf "$d" && echo "@@vitedge-cleaned" >&2
}
trap cleanup EXIT
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 141' PIPE
echo "@@vitedge-dir $$ $d" >&2
cd "$d" || exit 97
tar -xf - || { echo "@@vitedge-fail the files did not arrive whole (tar failed)" >&2; exit 98; }
"$@" >out.json 2>err.txt </dev/null &
p=$!
echo "@@vitedge-pid $p" >&2
( trap '' PIPE
  while kill -0 "$p" 2>/dev/null; do
    sleep 2 </dev/null >/dev/null 2>&1
    echo "@@vitedge-alive" >&2 || break
  done
  kill "$p" 2>/dev/null ) </dev/null >/dev/null &
w=$!
wait "$p"; rc=$?
p=
cat err.txt >&2; cat out.json
exit $rc
"""


@dataclass(frozen=True)
class SshTarget:
    """Where ``ssh`` connects: ``user`` (None: ssh's default, from ~/.ssh/config or the local user), ``host``
    (a name, an IPv4 address or an IPv6 one without brackets), ``port`` (None: ssh's default)."""

    user: str | None
    host: str
    port: int | None

    @property
    def label(self) -> str:
        """The target as an ``ssh://`` URL, for messages and the result's ``remote`` block."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user + '@' if self.user else ''}{host}{f':{self.port}' if self.port else ''}"


def parse_url(url: str) -> SshTarget:
    """Parse ``ssh://[user@]host[:port]`` (IPv6 as ``[addr]``); nothing else is allowed (no path, query,
    password).

    Raises:
        UsageError: another scheme, no host, a bad port, a path, a password, or a host or user starting with '-'.
    """
    bad = f"--on takes ssh://[user@]host[:port], got {url!r}"
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise UsageError(f"{bad} ({e})") from None
    if u.scheme != "ssh" or not u.hostname:
        raise UsageError(bad)
    if u.path not in ("", "/") or u.query or u.fragment or u.password is not None:
        raise UsageError(f"{bad}: no path, query or password (keys come from ssh-agent, ~/.ssh or --ssh-option)")
    host, user = u.hostname, u.username
    if host.startswith("-") or (user or "").startswith("-") or not re.fullmatch(r"[A-Za-z0-9._:%-]+", host):
        raise UsageError(f"{bad}: not a host name")
    if port == 0:
        raise UsageError(f"{bad}: port 0")
    return SshTarget(user or None, host, port)


class _Ssh:
    """The ``ssh`` command line for one target."""

    def __init__(self, target: SshTarget, options=(), connect_timeout: float = CONNECT_TIMEOUT_S):
        self.target = target
        self.options = [str(o) for o in options]
        for o in self.options:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*[ =].*", o):
                raise UsageError(f"--ssh-option takes KEY=VALUE (an ssh_config option, e.g. IdentityFile=~/.ssh/pi), "
                                 f"got {o!r}")
        self.connect_timeout = max(1, int(connect_timeout))

    def argv(self, script: str, *args: str) -> list[str]:
        exe = shutil.which("ssh")
        if exe is None:
            raise RuntimeMissingError("the OpenSSH client (ssh) is not installed here (Debian: apt-get install "
                                      "openssh-client)")
        cmd = [exe]
        for o in self.options:  # first: for ssh the first value given for an option wins
            cmd += ["-o", o]
        cmd += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}", "-o", "LogLevel=ERROR",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.target.port:
            cmd += ["-p", str(self.target.port)]
        if self.target.user:
            cmd += ["-l", self.target.user]
        remote = " ".join(shlex.quote(w) for w in ["sh", "-c", script, "vitedge", *args])
        return cmd + ["--", self.target.host, remote]

    def run(self, script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``script`` with ``sh -c`` on the target; raise the one-line error of a connection failure (exit 255)."""
        try:
            r = subprocess.run(self.argv(script, *args), stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=timeout, start_new_session=True)
        except subprocess.TimeoutExpired:
            raise HostUnreachableError(f"{self.target.label} did not answer within {timeout:.0f} s") from None
        if r.returncode == 255:
            raise ssh_error(self.target, r.stderr.decode(errors="replace"))
        return r


def ssh_error(target: SshTarget, stderr: str, during: str = "") -> RemoteError:
    """The one-line error for an ``ssh`` that exited 255 with ``stderr``: :class:`AuthRefusedError` (Permission
    denied), :class:`HostUnreachableError` (refused, timed out, unknown name, no route), else :class:`RemoteError`."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith(_MARK)]
    text = " ".join(lines)
    reason = lines[-1] if lines else "ssh exited with status 255"
    if "Permission denied" in text or "Too many authentication failures" in text:
        return AuthRefusedError(f"{target.label} refused the login ({reason}); check the user and the key "
                                "(ssh-agent, ~/.ssh/config, or --ssh-option IdentityFile=PATH)")
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return RemoteError(f"the host key of {target.label} is unknown or has changed: connect once with ssh "
                           f"to check and accept it ({reason})")
    unreachable = ("Connection refused", "timed out", "No route to host", "Could not resolve hostname",
                   "Name or service not known", "Network is unreachable", "Temporary failure in name resolution",
                   "kex_exchange_identification", "Connection reset", "Connection closed by")
    if not during and any(s in text for s in unreachable):
        return HostUnreachableError(f"cannot reach {target.label}: {reason}")
    if during:
        return RemoteError(f"lost the connection to {target.label} {during}: {reason}")
    return RemoteError(f"ssh to {target.label} failed: {reason}")


# ---- the runner build for the device's architecture ---------------------------------------------------------

def host_arch() -> str:
    """This machine's architecture, named as :data:`ARCH_NAMES` names them."""
    m = platform.machine()
    return ARCH_NAMES.get(m.lower(), m)


def elf_arch(path: Path) -> str | None:
    """The architecture an ELF executable is built for (``x86_64``, ``aarch64``, ...), None if not ELF."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"elf-machine-{machine}")


def build_dir(arch: str) -> Path | None:
    """The C++ build folder (a CMake build tree) for ``arch``: this machine's architecture is ``$VITEDGE_CPP_BUILD``
    or ``<repo>/build/cpp`` (``make cpp``); aarch64 on another machine is ``$VITEDGE_CPP_BUILD_AARCH64`` or
    ``<repo>/build/arm64`` (the cross build of ``make arm64``). None for other architectures."""
    if arch == host_arch():
        return Path(os.environ.get("VITEDGE_CPP_BUILD") or REPO / "build" / "cpp")
    if arch == "aarch64":
        return Path(os.environ.get("VITEDGE_CPP_BUILD_AARCH64") or REPO / "build" / "arm64")
    return None


def _build_key(build: Path) -> str:
    """SHA-256 of the sizes and mtimes of what ``cmake --install`` copies from ``build`` (the runner, the core
    library, the backend plugins) and of the install scripts: a staged prefix is reused while this is unchanged."""
    cpp = build / "cpp"
    files = [build / "cmake_install.cmake", cpp / "cmake_install.cmake", cpp / "vitedge-bench"]
    files += sorted(cpp.glob("libvitedge.so*"))
    backends = cpp / "vitedge" / "backends"
    if backends.is_dir():
        files += sorted(p for p in backends.rglob("*") if p.is_file() or p.is_symlink())
    h = hashlib.sha256()
    for p in files:
        try:
            st = p.lstat()
        except OSError:
            continue
        h.update(f"{p.relative_to(build)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def staged_prefix(build: Path, dest: Path) -> Path:
    """An installed, relocatable copy of the C++ build ``build`` at ``dest`` (``cmake --install build --prefix
    dest``), made once and reused while the build's files are unchanged (:func:`_build_key`, kept in
    ``dest/.vitedge-stage``). Installed beside ``dest`` and renamed into place, under a lock: never half-written.

    Raises:
        RuntimeMissingError: no cmake here, or ``cmake --install`` failed.
    """
    key = _build_key(build)
    stamp = dest / ".vitedge-stage"
    if stamp.is_file() and stamp.read_text() == key:
        return dest
    with _locked(dest.with_name(dest.name + ".lock")):
        if stamp.is_file() and stamp.read_text() == key:
            return dest
        cmake = shutil.which("cmake")
        if cmake is None:
            raise RuntimeMissingError(f"cmake is needed to install the runner of {build} for the device; or point "
                                      "--runner-prefix at an installed prefix")
        for stale in [*dest.parent.glob(f"{dest.name}.tmp-*"), *dest.parent.glob(f"{dest.name}.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted install (we hold the lock)
        tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
        progress.stage(f"installing the runner of {build} into {dest} (once per build)")
        r = subprocess.run([cmake, "--install", str(build), "--prefix", str(tmp)], capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeMissingError(f"cmake --install {build} failed: {first_line(r.stderr or r.stdout)}")
        (tmp / ".vitedge-stage").write_text(key)
        old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _check_prefix(prefix: Path, arch: str, what: str) -> Path:
    bench = prefix / "bin" / "vitedge-bench"
    if not bench.is_file():
        raise RuntimeMissingError(f"{what} {prefix} holds no bin/vitedge-bench (an installed prefix: cmake --install "
                                  "BUILD --prefix DIR)")
    got = elf_arch(bench)
    if got != arch:
        raise RuntimeMissingError(f"{what} {prefix} holds a vitedge-bench built for {got or 'no known architecture'}; "
                                  f"the device is {arch}")
    return prefix


def runner_prefix(arch: str, prefix: str | os.PathLike | None = None) -> Path:
    """The installed runner prefix (``bin/vitedge-bench``, ``lib/``) to send to a device of architecture ``arch``.

    In order: ``prefix`` (given by the user), ``$VITEDGE_BENCH_PREFIX_<ARCH>`` (e.g.
    ``VITEDGE_BENCH_PREFIX_AARCH64``), then the build for ``arch`` (:func:`build_dir`), installed once into
    ``$VITEDGE_REMOTE_STAGE/<arch>`` or ``<build>/remote-prefix`` (:func:`staged_prefix`). The runner found must
    be an ELF executable for ``arch``.

    Raises:
        RuntimeMissingError: no runner for ``arch`` (with how to get one), or one built for another architecture.
    """
    if prefix is not None:
        return _check_prefix(Path(prefix).expanduser(), arch, "--runner-prefix")
    env = f"VITEDGE_BENCH_PREFIX_{arch.upper()}"
    if os.environ.get(env):
        return _check_prefix(Path(os.environ[env]).expanduser(), arch, f"${env}")
    build = build_dir(arch)
    if build is None:
        raise RuntimeMissingError(f"no vitedge-bench build for {arch}, the device's architecture: vitedge builds the "
                                  f"runner for x86_64 and aarch64; point --runner-prefix (or {env}) at a prefix "
                                  f"installed from a build for {arch}")
    if not (build / "cpp" / "vitedge-bench").is_file():
        how = "make cpp" if arch == host_arch() else "the cross build: make arm64"
        raise RuntimeMissingError(f"no vitedge-bench build for {arch}, the device's architecture: {build} is not built "
                                  f"({how}), or point --runner-prefix (or {env}) at an installed {arch} prefix")
    stage_root = os.environ.get("VITEDGE_REMOTE_STAGE")
    dest = Path(stage_root) / arch if stage_root else build / "remote-prefix"
    return _check_prefix(staged_prefix(build, dest), arch, "the installed build")


# ---- what is sent --------------------------------------------------------------------------------------------

def _payload(prefix: Path, art, arch: str, keys) -> list[tuple[Path, str]]:
    """(local path, name in the archive) of everything the device needs: the runner, the core library, the one
    backend folder the artifact's runtime needs, the artifact's files and the public keys."""
    backend = art.manifest.get("backend")
    if backend == "coreml":
        raise RuntimeMissingError("the C++ runner has no Core ML backend: Core ML artifacts run on Apple devices "
                                  "(vitedge bench on a Mac)")
    folder = BACKEND_FOLDERS.get(backend)
    if folder is None:
        raise RuntimeMissingError(f"the C++ runner has no backend for '{backend}' (target {art.manifest.get('target')})")
    plugin = prefix / "lib" / "vitedge" / "backends" / folder
    if not plugin.is_dir():
        raise RuntimeMissingError(f"the {arch} runner in {prefix} has no {folder} backend (lib/vitedge/backends/"
                                  f"{folder}/): {backend} was not built for {arch}; rebuild with it to bench "
                                  f"{art.manifest.get('target')} artifacts there")
    # resolved: a prefix whose runner or backend folder is a symlink sends what it points to
    items = [((prefix / "bin" / "vitedge-bench").resolve(), "bin/vitedge-bench")]
    items += [(p, f"lib/{p.name}") for p in sorted((prefix / "lib").glob("libvitedge.so*"))]  # links kept
    items.append((plugin.resolve(), f"lib/vitedge/backends/{folder}"))
    files = art.manifest.get("files")
    names = [MANIFEST, *(sorted(files) if files else [])]
    if (art.path / SIGNATURE).is_file():
        names.append(SIGNATURE)
    if not files:  # --no-verify on an artifact without a files list: the folder's regular files as they are
        names = sorted(str(p.relative_to(art.path)) for p in art.path.rglob("*") if p.is_file())
    for n in dict.fromkeys(names):
        p = art.path / n
        if not p.is_file():
            raise ArtifactError(f"artifact file {p} is missing (listed in its manifest)")
        items.append((p.resolve(), f"artifact/{n}"))
    for i, k in enumerate(keys or ()):
        if not Path(k).is_file():
            raise UsageError(f"--key {k}: no such file")
        items.append((Path(k).resolve(), f"keys/key{i}.pem"))
    return items


def _payload_mb(items) -> float:
    total = 0
    for p, _ in items:
        if p.is_dir():
            total += sum(f.lstat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        else:
            total += p.lstat().st_size
    return total / 2**20


def _write_tar(stream, items) -> None:
    def anon(ti: tarfile.TarInfo) -> tarfile.TarInfo:  # owned by whoever unpacks it (root too)
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, name in items:
            tar.add(str(path), arcname=name, recursive=True, filter=anon)


# ---- the device --------------------------------------------------------------------------------------------

def probe(ssh: _Ssh, base: str | None) -> dict:
    """What :data:`_PROBE` reports: ``uname`` (uname -m), ``arch`` (normalised), ``cores``, ``os``, ``board``
    (device-tree model), ``cpu`` and ``flags`` (from /proc/cpuinfo; lscpu's model name when cpuinfo has none),
    ``base`` (the folder the run's temporary folder goes in). Raises the ssh errors, or RemoteError when the
    device lacks a tool the run needs or the base folder is not writable."""
    r = ssh.run(_PROBE, base or "", timeout=ssh.connect_timeout + 30)
    parts = r.stdout.decode(errors="replace").split("@@vitedge@@\n")
    if r.returncode != 0 or len(parts) != 8:
        raise RemoteError(f"{ssh.target.label} did not answer the probe (exit {r.returncode}): "
                          f"{first_line(r.stderr.decode(errors='replace') or r.stdout.decode(errors='replace'))}")
    uname, cores, osname, board, lscpu_model, missing, base_ok, cpuinfo = (s.strip() for s in parts)
    if missing:
        raise RemoteError(f"{ssh.target.label} lacks {', '.join(missing.split())}, needed to unpack and run the "
                          "benchmark there")
    base_dir, _, ok = base_ok.partition("\n")
    if ok.strip() != "ok":
        raise RemoteError(f"{ssh.target.label}: {base_dir} is not a writable folder there (--remote-tmp)")
    model, flags = parse_cpuinfo(cpuinfo)
    hardware = next((ln.partition(":")[2].strip() for ln in cpuinfo.splitlines()
                     if ln.partition(":")[0].strip() in ("Hardware", "Model name")), "")
    return {"uname": uname, "arch": ARCH_NAMES.get(uname.lower(), uname),
            "cores": int(cores) if cores.isdigit() else None, "os": osname, "board": board or None,
            "cpu": model or lscpu_model or hardware or board or "unknown", "flags": flags, "base": base_dir}


class _Run:
    """One ``ssh`` running :data:`_RUN`: streams the tar on stdin, reads stdout, parses the markers on stderr as
    they come (so the folder is known for clean-up even if interrupted)."""

    def __init__(self, argv: list[str]):
        self.dir = self.shell_pid = self.bench_pid = self.fail = None
        self.cleaned = False
        self.err: list[str] = []
        self.out = b""
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)  # Ctrl-C reaches this process only: we clean up
        self._threads = [threading.Thread(target=self._read_out, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_out(self) -> None:
        self.out = self.proc.stdout.read()

    def _read_err(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(_MARK + "-dir "):
                pid, _, d = line[len(_MARK) + 5:].partition(" ")
                self.shell_pid, self.dir = pid, d
            elif line.startswith(_MARK + "-pid "):
                self.bench_pid = line[len(_MARK) + 5:].strip()
            elif line.startswith(_MARK + "-cleaned"):
                self.cleaned = True
            elif line.startswith(_MARK + "-fail "):
                self.fail = line[len(_MARK) + 6:]
            elif not line.startswith(_MARK) and line.strip():
                self.err.append(line)

    def send(self, items) -> None:
        try:
            _write_tar(self.proc.stdin, items)
            self.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the device stopped reading: its own error (or ssh's) says why

    def wait(self, timeout: float | None) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        for t in self._threads:
            t.join(timeout=5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for t in self._threads:
            t.join(timeout=5)


def _remote_cleanup(ssh: _Ssh, run: _Run) -> None:
    """Remove the run's folder and end its processes with a second connection (when the first did not report
    the folder gone). Best effort: a device that cannot be reached now is left to the run's own trap."""
    if run.dir is None or run.cleaned or not _DIR_RE.match(run.dir):
        return
    pids = " ".join(p for p in (run.shell_pid, run.bench_pid) if p and p.isdigit())
    script = 'for p in $2; do kill -TERM "$p" 2>/dev/null; done; rm -rf -- "$1"; [ ! -e "$1" ]'
    try:
        r = ssh.run(script, run.dir, pids, timeout=ssh.connect_timeout + 20)
        run.cleaned = r.returncode == 0
    except (RemoteError, RuntimeMissingError):
        pass


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP raise KeyboardInterrupt (as Ctrl-C does) while a run is on, so its clean-up runs;
    only in the main thread (where Python handles signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _device_error(target: SshTarget, run: _Run, rc: int) -> Exception:
    """The one-line error of a run that did not exit 0 on the device."""
    if rc == 255 and run.dir is None:
        return ssh_error(target, "\n".join(run.err))
    if run.fail:  # the device's shell said what failed; the tool's own line (tar, mktemp) says why
        why = next((ln.strip() for ln in reversed(run.err) if ln.strip()), "")
        return RemoteError(f"on {target.label}: {run.fail}{': ' + why if why else ''}")
    lines = [ln.strip() for ln in run.err if ln.strip()]
    tool = next((ln for ln in lines if ln.startswith("vitedge-bench: error:")), None)
    if tool:
        msg = f"on {target.label}: {tool}"
        if "is not built" in tool or "backend plugin" in tool:
            return RuntimeMissingError(msg)
        return RemoteError(msg)
    text = " ".join(lines)
    lib = re.search(r"error while loading shared libraries: ([^:\s]+)", text)
    if lib:
        return RuntimeMissingError(f"on {target.label}: {lib.group(1)} is missing there (needed by vitedge-bench; "
                                   "install it, e.g. libssl3 for libcrypto.so.3)")
    if rc in (126, 127) or "Exec format error" in text or "not found" in text:
        return RuntimeMissingError(f"on {target.label}: cannot run vitedge-bench there: "
                                   f"{lines[-1] if lines else f'exit {rc}'}")
    if rc == 255:
        return ssh_error(target, "\n".join(run.err), during="during the run")
    if rc < 0:  # the ssh process here was killed
        return RemoteError(f"lost the connection to {target.label} during the run: ssh ended by signal "
                           f"{signal.Signals(-rc).name}")
    if rc > 128:
        return RemoteError(f"on {target.label}: the run ended with signal {rc - 128}{': ' + lines[-1] if lines else ''}")
    return RemoteError(f"on {target.label}: vitedge-bench exited {rc}{': ' + lines[-1] if lines else ''}")


def bench_remote(artifact, url: str, *, batch: int = 1, threads: int | None = None, warmup: int = 10,
                 iters: int = 50, ssh_options=(), verify: bool = True, trusted_keys=None, trust_code: bool = False,
                 device: str | None = None, runner_prefix_dir=None, remote_tmp: str | None = None,
                 arch: str | None = None, wrapper=(), connect_timeout: float = CONNECT_TIMEOUT_S,
                 timeout: float | None = None) -> dict:
    """Benchmark ``artifact`` on the machine at ``url`` (``ssh://[user@]host[:port]``) with the C++ runner, over
    OpenSSH; nothing stays on the device (module docstring).

    Args:
        artifact: the artifact folder (or its model file) here.
        batch, warmup, iters: as :func:`vitedge.bench.bench`; the input is ``vitedge-bench``'s seeded standard-normal
            (B, C, H, W) float32 batch of the artifact's size.
        threads: intra-op threads on the device (default: the CPUs usable there, ``nproc``).
        ssh_options: ssh_config options ``KEY=VALUE`` passed as ``-o`` (before vitedge's defaults, so they win):
            ``IdentityFile=...``, ``StrictHostKeyChecking=accept-new``, ``Compression=yes``...
        verify, trusted_keys, trust_code, device: ``vitedge-bench``'s ``--no-verify`` (when False), ``--key``
            (the public keys are sent), ``--trust-code``, ``--device`` (cpu, cuda, cuda:N).
        runner_prefix_dir: an installed runner prefix for the device's architecture (:func:`runner_prefix`).
        remote_tmp: absolute folder on the device for the run's temporary folder (default ``$TMPDIR`` or /tmp).
        arch: the device's architecture instead of its ``uname -m`` (with ``wrapper``: the aarch64 build under
            qemu-user on an x86-64 host).
        wrapper: command words put before ``vitedge-bench`` on the device, e.g. ``("qemu-aarch64", "-L", SYSROOT)``.
        connect_timeout: ssh's ConnectTimeout, s. timeout: limit for the whole run, s (None: none).
    Returns:
        The bench JSON of ``vitedge-bench`` (the schema of :mod:`vitedge.bench`; ``machine`` as the device reports
        it, ``artifact`` the path here) plus ``remote``: ``url``, ``host``, ``uname``, ``arch``, ``cpu``,
        ``flags`` (ISA features, parsed from the device's /proc/cpuinfo by :func:`vitedge.machine.parse_cpuinfo`),
        ``cores``, ``os``, ``board`` (device-tree model or None), ``runner`` (the prefix sent), ``sent_mb``
        and ``wall_s`` (transfer + run).
    Raises:
        UsageError: bad URL, options or counts. HostUnreachableError, AuthRefusedError: ssh could not log in.
        RuntimeMissingError: no runner build for the device's architecture, no backend for the artifact's runtime
            in it, a library or the wrapper missing on the device. ArtifactError: unreadable artifact here.
        RemoteError: the device's one-line error (a SHA-256 mismatch there, a bad input), a lost connection,
            an unknown host key.
    """
    if batch < 1 or iters < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise UsageError(f"need batch >= 1, iters >= 1, warmup >= 0, threads >= 1 (got {batch}, {iters}, {warmup}, "
                         f"{threads})")
    if remote_tmp is not None and (not remote_tmp.startswith("/") or "\n" in remote_tmp):
        raise UsageError(f"--remote-tmp must be an absolute folder on the device, got {remote_tmp!r}")
    target = parse_url(url)
    ssh = _Ssh(target, ssh_options, connect_timeout)
    art = read_manifest(artifact_folder(artifact), verify=False)  # the device checks the SHA-256 of what it runs
    progress.stage(f"probing {target.label}")
    dev = probe(ssh, remote_tmp)
    arch = arch or dev["arch"]
    prefix = runner_prefix(arch, runner_prefix_dir)
    items = _payload(prefix, art, arch, trusted_keys)
    threads = threads or dev["cores"] or 1
    cmd = [*map(str, wrapper), "bin/vitedge-bench", "artifact", "--batch", str(batch), "--threads", str(threads),
           "--warmup", str(warmup), "--iters", str(iters)]
    if not verify:
        cmd.append("--no-verify")
    for i in range(len(trusted_keys or ())):
        cmd += ["--key", f"keys/key{i}.pem"]
    if trust_code:
        cmd.append("--trust-code")
    if device:
        cmd += ["--device", device]
    sent_mb = _payload_mb(items)
    progress.stage(f"sending {sent_mb:.1f} MiB to {target.label} ({arch}) and running {iters} timed runs there")
    t0 = time.perf_counter()
    with _signals_interrupt():
        run = _Run(ssh.argv(_RUN, remote_tmp or "", *cmd))
        try:
            run.send(items)
            try:
                rc = run.wait(timeout)
            except subprocess.TimeoutExpired:
                raise RemoteError(f"no result from {target.label} after {timeout:.0f} s") from None
        finally:
            run.kill()
            _remote_cleanup(ssh, run)
            if run.dir and not run.cleaned:
                print(f"vitedge: warning: could not confirm that {run.dir} is gone on {target.label}; the run there "
                      "removes it when it ends", file=sys.stderr)
    if rc != 0:
        raise _device_error(target, run, rc)
    try:
        r = json.loads(run.out)
    except ValueError:
        raise RemoteError(f"on {target.label}: vitedge-bench printed no bench JSON "
                          f"({first_line(run.out.decode(errors='replace')) if run.out else 'nothing'})") from None
    r["artifact"] = str(art.path)
    r["remote"] = {"url": target.label, "host": target.host, "uname": dev["uname"], "arch": arch, "cpu": dev["cpu"],
                   "flags": dev["flags"], "cores": dev["cores"], "os": dev["os"], "board": dev["board"],
                   "runner": str(prefix), "sent_mb": sent_mb, "wall_s": time.perf_counter() - t0}
    return r
