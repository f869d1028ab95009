"""``vitedge sweep``: presets x targets x precisions (x devices) in one resumable run, and one leaderboard per device.

For each preset the sweep trains a checkpoint on scikit-learn's digits once (:func:`vitedge.train.train_digits`,
cached; or ``checkpoints={preset: path}``), then runs *cells*:

* an **export cell** per (preset, target, precision): :func:`vitedge.export.export` with the options
  ``vitedge export`` uses for that precision (int8: the target's recipe for the family, static int8 calibrated on
  ``calib_count`` digits of the train split), whose parity check against fp32 eager on the bundled photos is
  recorded, then :func:`vitedge.validate.validate` on the held-out digits: the artifact's top-1 and its drop in
  points against the fp32 eager model;
* a **timing cell** per (export cell, device): :func:`vitedge.bench.bench` here (the function ``vitedge bench``
  uses) or ``vitedge.remote.bench_remote`` on an ``ssh://`` device: p50/p90/p99 ms, throughput, size.

Export cells run in a process pool (``jobs`` processes, spawn context; exports are CPU-bound) or as Ray tasks
(``executor="ray"``); timing cells start once every export is done and run one at a time per device, so no
timing shares its device with an export or another timing.

Each cell's result is a JSON file written atomically under ``out/cells/``, holding the cell's *key*: a SHA-256
of everything its result depends on (preset, target, precision, options, image size, the checkpoint's SHA-256,
the versions of vitedge, torch and every runtime; for a timing cell also the artifact's manifest digest, batch,
threads, warm-up and timed runs, and the device). A re-run skips every cell whose file holds the same key (and
whose artifact is still the one it measured); ``force`` redoes them all. An interrupted run leaves whole cells
only: a cell's file is written after the cell finished, by a rename.

Output per device ``D`` (``local``, or a name made from the ssh URL): ``out/D/leaderboard.md``, ``.json`` and
``.png`` (p50 latency per artifact, labelled with its top-1 drop). Per preset, the fastest artifact (lowest
p50) whose drop is at most ``max_drop`` points is *picked*; ``pick`` copies it to ``pick/<preset>/``
(``pick/<device>/<preset>/`` with several devices).
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import multiprocessing
import os
import re
import shutil
import threading
import time
from pathlib import Path

import torch

from . import __version__, progress, remote
from .bench import bench
from .data import DIGITS_LABELS
from .errors import CheckpointError, RuntimeMissingError, UsageError, VitedgeError, first_line
from .export import export, prepare_preset
from .files import write_json_atomic
from .machine import machine_info
from .manifest import atomic_directory, read_manifest, sha256_file
from .models.zoo import get_preset
from .quantize import calibration_data
from .report import markdown_table, plot_latency_bars
from .targets import default_int8_options, get_target, target_names
from .train import DEFAULT_DIGITS_SIZE, train_digits
from .validate import validate

__all__ = ["DEFAULT_MAX_DROP", "DEFAULT_PRECISIONS", "SweepConfig", "leaderboard", "pick_artifacts", "sweep"]

DEFAULT_PRECISIONS = ("fp32", "int8")
DEFAULT_MAX_DROP = 0.5  # points of top-1
LOCAL = "local"
# Distributions whose version shapes an artifact or its timing: a change redoes the cells (absent ones are left out).
RUNTIME_DISTRIBUTIONS = ("torch", "numpy", "onnx", "onnxscript", "onnx-ir", "onnxruntime", "openvino", "nncf",
                         "executorch", "torchao", "coremltools", "tensorrt")
RAY_HINT = "pip install 'vitedge[ray]'"


@dataclasses.dataclass
class SweepConfig:
    """What :func:`sweep` runs.

    Attributes:
        presets: zoo preset names (``vitedge zoo``).
        out: the sweep folder: cells (``cells/``) and the leaderboards (``<device>/leaderboard.*``).
        artifacts: where checkpoints and artifacts go (default ``out/artifacts``); keep it out of a folder you
            commit.
        targets: target names (default: every registered target; those that cannot run here are recorded with the
            reason).
        precisions: fp32, fp16, bf16, int8 (a precision a target cannot produce is recorded with the reason).
        devices: ``"local"`` (this machine) and/or ``ssh://[user@]host[:port]`` URLs; timing cells run on each.
        image_size: (H, W) the digits are trained and the artifacts exported at (default 64x64, the digits
            training size: minutes, not the hours of 224x224).
        epochs, seed: of the digits training (:func:`vitedge.train.train_digits`).
        checkpoints: preset -> checkpoint path to use instead of training (a ``vitedge train`` checkpoint).
        calib_count: digits train images that calibrate static int8.
        batch, threads, warmup, iters: of every timing cell (threads: default the CPUs usable here).
        max_drop: points of top-1 drop an artifact may lose and still be picked.
        jobs: processes for training and export cells (default: the CPUs usable here).
        executor: ``"local"`` (process pool) or ``"ray"`` (Ray tasks on the cluster at ``ray_address``, or on the
            Ray instance this process already started).
        force: redo every cell, done or not.
        plugins: Python modules imported first in every process (e.g. one registering a model family or target).
        pick: copy each preset's picked artifact there (atomic; a previous artifact there is replaced).
        ssh_options: ``ssh -o`` options (``KEY=VALUE``) for the ``ssh://`` devices, as ``vitedge bench --ssh-option``
            (not part of a cell's key: they say how to log in, not what is measured).
    """

    presets: list[str]
    out: Path
    artifacts: Path | None = None
    targets: list[str] | None = None
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    devices: tuple[str, ...] = (LOCAL,)
    image_size: tuple[int, int] = DEFAULT_DIGITS_SIZE
    epochs: int = 12
    seed: int = 0
    checkpoints: dict[str, str] = dataclasses.field(default_factory=dict)
    calib_count: int = 128
    batch: int = 1
    threads: int | None = None
    warmup: int = 10
    iters: int = 50
    max_drop: float = DEFAULT_MAX_DROP
    jobs: int | None = None
    executor: str = "local"
    ray_address: str | None = None
    ssh_options: tuple[str, ...] = ()
    force: bool = False
    plugins: tuple[str, ...] = ()
    pick: Path | None = None


# ------------------------------------------------------------------------------------------------ keys and files
def _plain(obj):
    """JSON-able copy: tuples to lists, numpy scalars to Python numbers, anything else to its repr."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    return repr(obj)


def cell_key(fields: dict) -> str:
    """Hex SHA-256 of ``fields`` as canonical JSON (sorted keys): the identity of a cell's inputs."""
    return hashlib.sha256(json.dumps(_plain(fields), sort_keys=True).encode()).hexdigest()


def runtime_versions() -> dict:
    """vitedge's version and those of :data:`RUNTIME_DISTRIBUTIONS` installed here (read from package metadata:
    nothing is imported)."""
    out = {"vitedge": __version__}
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON at ``path`` atomically (a temp file beside it, fsync'ed, renamed over it)."""
    write_json_atomic(path, _plain(obj))


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def device_slug(device: str) -> str:
    """Folder name of a device: ``local``, or ``ssh-user@host-2222`` for ``ssh://user@host:2222``."""
    if device == LOCAL:
        return LOCAL
    return re.sub(r"[^A-Za-z0-9@._-]+", "-", device.replace("ssh://", "ssh-", 1)).strip("-")


def check_device(device: str) -> str:
    """``device`` if it is ``local`` or ``ssh://[user@]host[:port]`` (a one-line UsageError otherwise)."""
    if device == LOCAL or re.fullmatch(r"ssh://([A-Za-z0-9._-]+@)?[A-Za-z0-9._-]+(:\d{1,5})?/?", device):
        return device
    raise UsageError(f"--on {device!r}: a device is 'local' or ssh://[user@]host[:port]")


# ---------------------------------------------------------------------------------------------------- the cells
def _setup(job: dict) -> None:
    """In the process that runs a cell: import the plugins and set the intra-op threads (once per process)."""
    for name in job.get("plugins") or ():
        importlib.import_module(name)
    n = job.get("threads")
    if n and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _init_worker(plugins: tuple[str, ...], threads: int) -> None:
    progress.enable(False)  # bars from several processes would interleave on stderr
    _setup({"plugins": plugins, "threads": threads})


def _failure(e: BaseException) -> dict:
    if isinstance(e, VitedgeError):
        return {"status": "failed", "reason": first_line(e, 400)}
    return {"status": "failed", "reason": f"unexpected {type(e).__name__}: {first_line(e, 300)}"}


def run_train_cell(job: dict) -> dict:
    """Train ``job["preset"]`` on the digits into ``job["path"]``; returns the cell result (status, top-1 on the
    held-out digits in %, seconds). Failures are returned as ``{"status": "failed", "reason"}``, never raised."""
    try:
        _setup(job)
        t0 = time.perf_counter()
        side = train_digits(job["preset"], job["path"], image_size=tuple(job["image_size"]), epochs=job["epochs"],
                            seed=job["seed"], log=None)
        return {"status": "ok", "test_top1": 100 * side["test_top1"], "seconds": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 - a failed cell is a result: recorded, the sweep goes on
        return _failure(e)


def _parity_summary(parity: dict) -> dict:
    if "skipped" in parity:
        return {"skipped": parity["skipped"]}
    runs = [v for k, v in parity.items() if k.startswith("batch_") and isinstance(v, dict)]
    return {"max_abs": max(r["max_abs"] for r in runs), "cosine": min(r["cosine"] for r in runs),
            "batches": [int(k[6:]) for k in parity if k.startswith("batch_")]}


def run_export_cell(job: dict) -> dict:
    """Export one (preset, target, precision) into ``job["artifact"]`` and measure its top-1 on the held-out digits.

    Returns the cell result: ``status`` ok, ``parity`` (max abs diff and min cosine vs fp32 eager on the photos at
    batches 1, 3, 8, or why it was skipped), ``top1`` / ``eager_top1`` (%) and ``drop_points`` (None with
    ``top1_skipped`` where the artifact cannot run here), ``size_mb`` (MiB), ``manifest_sha256``, ``seconds``;
    or ``{"status": "failed", "reason"}`` (e.g. an export refused for parity): never raised.
    """
    try:
        _setup(job)
        t0 = time.perf_counter()
        model, spec, pre = prepare_preset(job["preset"], checkpoint=job["checkpoint"])
        quant = None
        if job["precision"] == "int8":
            quant = dict(job["quantization"])
            if quant.get("mode") == "static":
                x, info = calibration_data("digits", pre, job["calib_count"])
                quant.update(method=quant.get("method", "minmax"), calibration=x.numpy(), calibration_info=info)
        labels = (spec.get("training") or {}).get("labels") or DIGITS_LABELS
        art = export(model, torch.zeros(2, 3, *pre["size"]), job["target"], job["artifact"], spec=spec,
                     preprocessing=pre, labels=labels, precision=job["precision"], quantization=quant, force=True)
        res = {"status": "ok", "parity": _parity_summary(art.manifest["parity"]), "size_mb": art.size_mb,
               "manifest_sha256": sha256_file(Path(job["artifact"]) / "manifest.json"),
               "quantization": {k: v for k, v in (art.manifest.get("quantization") or {}).items()
                                if k in ("mode", "method", "calibration")} or None,
               "top1": None, "eager_top1": None, "drop_points": None}
        cannot = get_target(job["target"]).unavailable()
        if cannot is None:
            m = validate(art.path, dataset="digits", threads=job.get("threads"), trust_code=True)["metrics"]
            res.update(top1=100 * m["top1"], eager_top1=100 * m["eager_top1"], drop_points=m["drop_points"])
        else:
            res["top1_skipped"] = f"not measured: {cannot}"
        res["seconds"] = time.perf_counter() - t0
        return res
    except Exception as e:  # noqa: BLE001 - a failed cell is a result: recorded, the sweep goes on
        return _failure(e)


def run_timing_cell(job: dict) -> dict:
    """Time one artifact on one device; returns ``{"status": "ok", "bench": <bench JSON>}`` or a failure."""
    try:
        _setup({"plugins": job.get("plugins")})
        kw = dict(batch=job["batch"], threads=job["threads"], warmup=job["warmup"], iters=job["iters"])
        if job["device"] == LOCAL:
            r = bench(job["artifact"], trust_code=True, **kw)  # the sweep exported it itself
        else:
            r = remote.bench_remote(job["artifact"], job["device"], ssh_options=tuple(job.get("ssh_options") or ()),
                                    **kw)
        return {"status": "ok", "bench": r}
    except Exception as e:  # noqa: BLE001 - a failed cell is a result: recorded, the sweep goes on
        return _failure(e)


# ------------------------------------------------------------------------------------------------------ executors
def _import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeMissingError(f"--executor ray needs Ray, which is not installed here: {RAY_HINT}") from None
    return ray


class _Executor:
    """Runs cells: a spawn process pool (or inline with one job) for training and exports, and per device one
    timing cell at a time; or the same as Ray tasks."""

    def __init__(self, cfg: SweepConfig, threads_per_job: int):
        self.cfg, self.threads_per_job = cfg, threads_per_job
        self.ray = None
        if cfg.executor == "ray":
            self.ray = _import_ray()
            if not self.ray.is_initialized():
                if not cfg.ray_address:
                    raise UsageError("--executor ray needs --ray-address ADDR (a running cluster: ray start --head)")
                try:
                    self.ray.init(address=cfg.ray_address, log_to_driver=False)
                except (ConnectionError, ValueError, RuntimeError) as e:
                    raise VitedgeError(f"--ray-address {cfg.ray_address}: cannot connect to a Ray cluster there: "
                                       f"{first_line(e, 200)}") from None
        elif cfg.executor != "local":
            raise UsageError(f"unknown executor {cfg.executor!r} (known: local, ray)")

    def map(self, fn, jobs: list[dict], done) -> None:
        """Run ``fn(job)`` for every job, concurrently; ``done(job, result)`` is called in this process as each
        finishes."""
        if not jobs:
            return
        if self.ray is not None:
            task = self.ray.remote(num_cpus=1, max_retries=0)(fn)
            refs = {task.remote(j): j for j in jobs}
            pending = list(refs)
            while pending:
                ready, pending = self.ray.wait(pending, num_returns=1)
                for r in ready:
                    done(refs[r], self.ray.get(r))
            return
        workers = min(self.cfg.jobs or 1, len(jobs))
        if workers == 1:
            for j in jobs:
                done(j, fn(j))
            return
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker,
                                      initargs=(tuple(self.cfg.plugins), self.threads_per_job))
        try:
            futures = {pool.submit(fn, j): j for j in jobs}
            for f in cf.as_completed(futures):
                done(futures[f], f.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

    def time_per_device(self, jobs: list[dict], done) -> None:
        """Run the timing cells: those of one device strictly one after another, devices side by side."""
        queues: dict[str, list[dict]] = {}
        for j in jobs:
            queues.setdefault(j["device"], []).append(j)
        if not queues:
            return
        if self.ray is not None:
            self._ray_time(queues, done)
            return
        lock = threading.Lock()

        def one_device(q):
            for j in q:
                r = run_timing_cell(j)
                with lock:
                    done(j, r)

        if len(queues) == 1:
            one_device(next(iter(queues.values())))
            return
        with cf.ThreadPoolExecutor(max_workers=len(queues)) as ex:  # ssh devices wait on the network
            for f in [ex.submit(one_device, q) for q in queues.values()]:
                f.result()

    def _ray_time(self, queues: dict, done) -> None:
        """One timing task in flight per device; a device's tasks are pinned to the node its first one ran on
        (``local``: that node is the device; an ssh device: the node that drives it)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        ray = self.ray
        pinned = ray.remote(max_retries=0)(_timing_task)
        node: dict[str, str] = {}
        inflight: dict = {}

        def submit(dev):
            j = queues[dev].pop(0)
            opts = {"num_cpus": j["ray_cpus"]}
            if dev in node:
                opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node[dev], soft=False)
            inflight[pinned.options(**opts).remote(j)] = (dev, j)

        node_cpus = max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
        for q in queues.values():  # a task asking for more CPUs than any node has would wait forever
            for j in q:
                j["ray_cpus"] = max(1, min(int(j["threads"]), int(node_cpus))) if j["device"] == LOCAL else 1
        for dev in queues:
            submit(dev)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            dev, j = inflight.pop(ready[0])
            node_id, r = ray.get(ready[0])
            node.setdefault(dev, node_id)
            done(j, r)
            if queues[dev]:
                submit(dev)


def _timing_task(job: dict) -> tuple[str, dict]:
    """A Ray task: (the node it ran on, :func:`run_timing_cell`'s result)."""
    import ray
    return ray.get_runtime_context().get_node_id(), run_timing_cell(job)


# ---------------------------------------------------------------------------------------------------- the sweep
def _log_default(msg: str) -> None:
    print(msg, flush=True)


def sweep(cfg: SweepConfig, log=_log_default) -> dict:
    """Run (or resume) the sweep ``cfg`` describes; write the cells, the leaderboards and, with ``cfg.pick``, the
    picked artifacts.

    Args:
        cfg: a :class:`SweepConfig`.
        log: called with one line per finished cell and per summary (None: silent).
    Returns:
        ``{"leaderboards": {device: leaderboard dict (see :func:`leaderboard`)}, "ran": cells run,
        "skipped": cells already done, "files": {device: [paths written]}, "picked": {device: {preset: path}}}``.
    Raises:
        UsageError: an unknown preset, target or precision, a bad device, an unknown executor, a preset that
            cannot take ``image_size``, a checkpoint given for a preset not swept.
        RuntimeMissingError: ``executor="ray"`` without Ray installed.
        CheckpointError: a ``checkpoints`` file that does not exist.
        A cell's own failure (an export refused for parity, a training that fails) is recorded in its cell, not
        raised.
    """
    log = log or (lambda _m: None)
    for name in cfg.plugins:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UsageError(f"--plugin {name}: cannot import it: {first_line(e, 200)}") from None
    presets = list(dict.fromkeys(cfg.presets))
    if not presets:
        raise UsageError("--presets: name at least one preset (vitedge zoo lists them)")
    families = {p: get_preset(p).family for p in presets}  # UsageError for an unknown one
    targets = list(dict.fromkeys(cfg.targets or target_names()))
    target_objs = {t: get_target(t) for t in targets}  # UsageError (close matches) for an unknown one
    known_precisions = {p for t in target_objs.values() for p in t.precisions}
    precisions = list(dict.fromkeys(cfg.precisions))
    bad = [p for p in precisions if p not in known_precisions | {"fp32", "fp16", "bf16", "int8"}]
    if bad:
        raise UsageError(f"unknown precision {bad[0]!r} (known: fp32, fp16, bf16, int8)")
    devices = [check_device(d) for d in dict.fromkeys(cfg.devices or (LOCAL,))]
    extra = sorted(set(cfg.checkpoints) - set(presets))
    if extra:
        raise UsageError(f"--checkpoint {extra[0]}=...: {extra[0]} is not among the swept presets")
    for p, path in cfg.checkpoints.items():
        if not Path(path).is_file():
            raise CheckpointError(f"--checkpoint {p}={path}: no such file")
    size = (int(cfg.image_size[0]), int(cfg.image_size[1]))
    for p in presets:  # refuse an image size a family cannot take before any work (UsageError)
        prepare_preset(p, num_classes=10, image_size=size)
    out = Path(cfg.out)
    arts = Path(cfg.artifacts) if cfg.artifacts else out / "artifacts"
    cores = machine_info()["cores"]
    jobs = cfg.jobs or cores
    threads_per_job = 1 if cfg.executor == "ray" else max(1, cores // max(1, min(jobs, cores)))
    cfg = dataclasses.replace(cfg, jobs=jobs)
    threads = cfg.threads or cores
    versions = runtime_versions()
    executor = _Executor(cfg, threads_per_job)
    stats = {"ran": 0, "skipped": 0}
    base = {"plugins": list(cfg.plugins), "threads": threads_per_job}

    # 1. checkpoints: trained once per preset (the file name holds the training key), or given.
    ckpts: dict[str, Path] = {}
    train_jobs = []
    for p in presets:
        if p in cfg.checkpoints:
            ckpts[p] = Path(cfg.checkpoints[p]).absolute()
            continue
        key = cell_key({"kind": "train", "preset": p, "image_size": size, "epochs": cfg.epochs, "seed": cfg.seed,
                        "versions": {k: versions.get(k) for k in ("vitedge", "torch")}})
        path = (arts / "checkpoints" / f"{p}-{size[0]}x{size[1]}-e{cfg.epochs}-s{cfg.seed}-{key[:12]}.safetensors")
        ckpts[p] = path.absolute()
        if not cfg.force and path.is_file() and Path(f"{path}.json").is_file():
            stats["skipped"] += 1
            continue
        train_jobs.append({**base, "kind": "train", "preset": p, "path": str(path.absolute()), "image_size": size,
                           "epochs": cfg.epochs, "seed": cfg.seed})
    train_failed: dict[str, str] = {}

    def trained(job, res):
        stats["ran"] += 1
        if res["status"] == "ok":
            log(f"trained {job['preset']} on the digits ({size[0]}x{size[1]}, {cfg.epochs} epochs): test top-1 "
                f"{res['test_top1']:.2f} %, {res['seconds']:.0f} s")
        else:
            train_failed[job["preset"]] = res["reason"]
            log(f"training {job['preset']} failed: {res['reason']}")

    if train_jobs:
        progress.stage(f"training {len(train_jobs)} preset(s) on the digits")
    executor.map(run_train_cell, train_jobs, trained)

    # 2. export cells
    cells_dir = out / "cells"
    plan: list[dict] = []  # one entry per (preset, target, precision), in leaderboard order
    export_jobs = []
    remote_only = [d for d in devices if d != LOCAL]
    for p in presets:
        ck_sha = sha256_file(ckpts[p]) if p not in train_failed and ckpts[p].is_file() else None
        for t in targets:
            tobj = target_objs[t]
            for prec in precisions:
                entry = {"preset": p, "family": families[p], "target": t, "precision": prec,
                         "artifact": f"{p}/{t}-{prec}", "file": cells_dir / "export" / f"{p}.{t}.{prec}.json"}
                plan.append(entry)
                cannot = tobj.unavailable()
                if prec not in tobj.precisions:
                    entry["result"] = {"status": "skipped", "reason": f"{t} cannot produce {prec} (it does: "
                                                                      f"{', '.join(tobj.precisions)})"}
                    continue
                if cannot is not None and not remote_only:
                    entry["result"] = {"status": "skipped", "reason": f"{t} does not run here: {cannot}"}
                    continue
                if ck_sha is None:
                    entry["result"] = {"status": "skipped", "reason": f"no checkpoint: training failed "
                                                                      f"({train_failed.get(p, 'missing')})"}
                    continue
                options: dict = {}
                quant = None
                if prec == "int8":
                    quant = default_int8_options(t, families[p])
                    options["quantization"] = quant
                    if quant.get("mode") == "static":
                        options["calibration"] = {"source": "digits", "split": "train", "count": cfg.calib_count}
                key = cell_key({"kind": "export", "preset": p, "target": t, "precision": prec, "options": options,
                                "image_size": size, "checkpoint_sha256": ck_sha, "versions": versions})
                entry["key"] = key
                prev = _read_json(entry["file"])
                art_dir = arts / entry["artifact"]
                if (not cfg.force and prev and prev.get("key") == key and prev.get("result", {}).get("status")
                        in ("ok", "failed") and (prev["result"]["status"] == "failed" or _manifest_sha(art_dir)
                                                 == prev["result"].get("manifest_sha256"))):
                    entry["result"] = prev["result"]
                    stats["skipped"] += 1
                    continue
                export_jobs.append({**base, "kind": "export", "entry": len(plan) - 1, "preset": p, "target": t,
                                    "precision": prec, "checkpoint": str(ckpts[p]), "quantization": quant,
                                    "calib_count": cfg.calib_count, "artifact": str(art_dir.absolute())})

    def exported(job, res):
        stats["ran"] += 1
        entry = plan[job["entry"]]
        entry["result"] = res
        _write_json(entry["file"], {"kind": "export", "key": entry["key"], "preset": job["preset"],
                                    "target": job["target"], "precision": job["precision"],
                                    "artifact": entry["artifact"], "versions": versions, "result": res})
        what = f"{job['preset']} {job['target']} {job['precision']}"
        if res["status"] == "ok":
            acc = (f"top-1 {res['top1']:.2f} % (drop {res['drop_points']:+.2f} points)" if res["top1"] is not None
                   else res.get("top1_skipped", "top-1 not measured"))
            log(f"exported {what}: {acc}, {res['size_mb']:.2f} MB, {res['seconds']:.0f} s")
        else:
            log(f"{what}: {res['reason']}")

    if export_jobs:
        progress.stage(f"{len(export_jobs)} export cell(s) on {min(jobs, len(export_jobs))} process(es)")
    executor.map(run_export_cell, export_jobs, exported)

    # 3. timing cells, after every export: one at a time per device
    timings: dict[str, dict[int, dict]] = {d: {} for d in devices}
    timing_jobs = []
    local_id = {k: machine_info()[k] for k in ("cpu", "cores", "arch")}
    for i, entry in enumerate(plan):
        res = entry.get("result") or {}
        for d in devices:
            f = cells_dir / device_slug(d) / f"{entry['preset']}.{entry['target']}.{entry['precision']}.json"
            if res.get("status") != "ok":
                timings[d][i] = {"status": "skipped", "reason": "no artifact"}
                continue
            if d == LOCAL and target_objs[entry["target"]].unavailable() is not None:
                timings[d][i] = {"status": "skipped", "reason": f"{entry['target']} does not run here: "
                                                               f"{target_objs[entry['target']].unavailable()}"}
                continue
            dev_id = ({"device": LOCAL, "executor": cfg.executor, "ray_address": cfg.ray_address, **local_id}
                      if d == LOCAL else {"device": d})
            dev_threads = threads if d == LOCAL else cfg.threads  # None on a device: all of its CPUs
            key = cell_key({"kind": "timing", "export_key": entry["key"], "manifest_sha256": res["manifest_sha256"],
                            "batch": cfg.batch, "threads": dev_threads, "warmup": cfg.warmup, "iters": cfg.iters,
                            "device": dev_id, "versions": versions})
            prev = _read_json(f)
            if not cfg.force and prev and prev.get("key") == key and prev.get("result", {}).get("status") in (
                    "ok", "failed"):
                timings[d][i] = prev["result"]
                stats["skipped"] += 1
                continue
            timing_jobs.append({"plugins": list(cfg.plugins), "kind": "timing", "entry": i, "device": d, "key": key,
                                "file": str(f), "artifact": str((arts / entry["artifact"]).absolute()),
                                "batch": cfg.batch, "threads": dev_threads, "warmup": cfg.warmup,
                                "iters": cfg.iters, "ssh_options": list(cfg.ssh_options)})

    def timed(job, res):
        stats["ran"] += 1
        entry = plan[job["entry"]]
        if res["status"] == "ok":  # the artifact's name in the artifacts folder, not this machine's absolute path
            res["bench"] = {**res["bench"], "artifact": entry["artifact"]}
        timings[job["device"]][job["entry"]] = res
        _write_json(Path(job["file"]), {"kind": "timing", "key": job["key"], "device": job["device"],
                                        "preset": entry["preset"], "target": entry["target"],
                                        "precision": entry["precision"], "result": res})
        what = f"{entry['preset']} {entry['target']} {entry['precision']} on {job['device']}"
        if res["status"] == "ok":
            lat = res["bench"]["latency_ms"]
            log(f"timed {what}: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")
        else:
            log(f"timing {what}: {res['reason']}")

    if timing_jobs:
        progress.stage(f"{len(timing_jobs)} timing cell(s), one at a time per device")
    executor.time_per_device(timing_jobs, timed)
    if stats["skipped"]:
        log(f"skipped {stats['skipped']} cells already done")

    # 4. leaderboards, picks
    settings = {"image_size": list(size), "epochs": cfg.epochs, "seed": cfg.seed, "calib_count": cfg.calib_count,
                "batch": cfg.batch, "threads": threads, "warmup": cfg.warmup, "iters": cfg.iters,
                "executor": cfg.executor, "checkpoints": {p: _shown(ckpts[p]) for p in presets}}
    boards, files, picked = {}, {}, {}
    for d in devices:
        board = leaderboard(plan, timings[d], d, cfg.max_drop, settings, versions, Path(_shown(arts)))
        boards[d] = board
        files[d] = write_leaderboard(board, out / device_slug(d))
        for row in board["rows"]:
            if row.get("picked"):
                log(f"picked for {row['preset']} on {d}: {row['target']} {row['precision']} "
                    f"(p50 {row['p50_ms']:.2f} ms, drop {row['drop_points']:+.2f} points)")
        log(f"wrote {', '.join(str(p) for p in files[d])}")
        if cfg.pick is not None:
            dest = Path(cfg.pick) if len(devices) == 1 else Path(cfg.pick) / device_slug(d)
            picked[d] = pick_artifacts(board, arts, dest)
            for p, path in picked[d].items():
                log(f"copied the picked {p} artifact to {path}")
    return {"leaderboards": boards, "files": files, "picked": picked, **stats}


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it (what a committed leaderboard records)."""
    p = Path(path).absolute()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _manifest_sha(folder: Path) -> str | None:
    try:
        return sha256_file(folder / "manifest.json")
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------- leaderboards
COLUMNS = [("preset", "preset", "{}"), ("target", "target", "{}"), ("precision", "precision", "{}"),
           ("runtime", "runtime", "{}"), ("top-1 %", "top1", "{:.2f}"), ("drop (pts)", "drop_points", "{:+.2f}"),
           ("parity max abs", "parity_max_abs", "{:.1e}"), ("parity cosine", "parity_cosine", "{:.6f}"),
           ("p50 ms", "p50_ms", "{:.2f}"), ("p90 ms", "p90_ms", "{:.2f}"), ("p99 ms", "p99_ms", "{:.2f}"),
           ("img/s", "throughput_ips", "{:.1f}"), ("size MB", "size_mb", "{:.2f}"), ("picked", "mark", "{}")]
NOT_RUN_COLUMNS = [("preset", "preset", "{}"), ("target", "target", "{}"), ("precision", "precision", "{}"),
                   ("why", "reason", "{}")]


def leaderboard(plan: list[dict], timings: dict[int, dict], device: str, max_drop: float, settings: dict,
                versions: dict, artifacts: Path) -> dict:
    """One device's leaderboard from the export cells (``plan``) and that device's timing cells.

    Returns ``{"device", "machine", "max_drop", "settings", "versions", "artifacts", "rows", "not_run",
    "picked"}``: ``rows`` are the artifacts that were timed (top-1 and drop in %/points, parity, p50/p90/p99 ms,
    img/s, size MB, ``picked``), fastest first within each preset; ``not_run`` the cells that could not run, with
    the reason; ``picked`` preset -> artifact folder (relative to ``artifacts``) of the fastest artifact whose
    drop is at most ``max_drop`` points (None when none qualifies).
    """
    rows, not_run, machine = [], [], None
    for i, entry in enumerate(plan):
        res = entry.get("result") or {"status": "skipped", "reason": "not run"}
        tim = timings.get(i) or {"status": "skipped", "reason": "not timed"}
        base = {k: entry[k] for k in ("preset", "target", "precision")}
        if res["status"] != "ok" or tim["status"] != "ok":
            reason = res.get("reason") if res["status"] != "ok" else f"not timed on {device}: {tim['reason']}"
            not_run.append({**base, "stage": "export" if res["status"] != "ok" else "timing", "reason": reason})
            continue
        b = tim["bench"]
        machine = machine or b.get("machine")
        par = res.get("parity") or {}
        rows.append({**base, "artifact": entry["artifact"], "runtime": b["runtime"], "top1": res.get("top1"),
                     "eager_top1": res.get("eager_top1"), "drop_points": res.get("drop_points"),
                     "top1_skipped": res.get("top1_skipped"), "parity_max_abs": par.get("max_abs"),
                     "parity_cosine": par.get("cosine"), "parity_skipped": par.get("skipped"),
                     "p50_ms": b["latency_ms"]["p50"], "p90_ms": b["latency_ms"]["p90"],
                     "p99_ms": b["latency_ms"]["p99"], "throughput_ips": b["throughput_ips"],
                     "size_mb": b.get("artifact_mb", res.get("size_mb")), "batch": b["batch"],
                     "threads": b["threads"], "picked": False})
    picked = {}
    for p in dict.fromkeys(e["preset"] for e in plan):
        ok = [r for r in rows if r["preset"] == p and r["drop_points"] is not None and r["drop_points"] <= max_drop]
        best = min(ok, key=lambda r: r["p50_ms"], default=None)
        picked[p] = best["artifact"] if best else None
        if best:
            best["picked"] = True
    order = {p: k for k, p in enumerate(dict.fromkeys(e["preset"] for e in plan))}
    rows.sort(key=lambda r: (order[r["preset"]], r["p50_ms"]))
    return {"device": device, "machine": machine, "max_drop": max_drop, "settings": settings, "versions": versions,
            "artifacts": str(artifacts), "rows": rows, "not_run": not_run, "picked": picked}


def write_leaderboard(board: dict, folder: Path) -> list[Path]:
    """Write ``board`` as ``leaderboard.json``, ``leaderboard.md`` and ``leaderboard.png`` in ``folder``
    (each atomically); returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "leaderboard.json", folder / "leaderboard.md", folder / "leaderboard.png"]
    _write_json(paths[0], board)
    tmp = folder / f".leaderboard.md.tmp-{os.getpid()}"
    tmp.write_text(_markdown(board))
    os.replace(tmp, paths[1])
    _plot(board, paths[2])
    return paths


def _markdown(board: dict) -> str:
    s, m = board["settings"], board.get("machine") or {}
    rows = [{**r, "mark": "**picked**" if r["picked"] else ""} for r in board["rows"]]
    where = (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores ({', '.join(m.get('flags') or []) or 'no ISA flags'})"
             if m else "no timing ran")
    lines = [f"# vitedge sweep: {board['device']}", "",
             f"{where}. Batch {s['batch']}, {s['threads']} threads, {s['warmup']} warm-up + {s['iters']} timed runs "
             f"per artifact, one artifact at a time. Models trained on the scikit-learn digits at "
             f"{s['image_size'][0]}x{s['image_size'][1]} ({s['epochs']} epochs, seed {s['seed']}); top-1 on the "
             f"held-out digits, drop = fp32 eager top-1 minus the artifact's, in points; parity = max abs diff and "
             f"min cosine vs fp32 eager on the bundled photos at export. Picked: per preset, the lowest p50 with a "
             f"drop of at most {board['max_drop']:g} points.", "",
             markdown_table(rows, COLUMNS), ""]
    lines += ["## Picked", ""]
    for p, a in board["picked"].items():
        lines.append(f"- {p}: " + (f"`{a}`" if a else f"none within {board['max_drop']:g} points"))
    if board["not_run"]:
        lines += ["", "## Not run", "", markdown_table(board["not_run"], NOT_RUN_COLUMNS)]
    v = board["versions"]
    lines += ["", "Versions: " + ", ".join(f"{k} {v[k]}" for k in v), ""]
    return "\n".join(lines)




def _plot(board: dict, path: Path) -> None:
    """A panel per preset, a bar per timed artifact (p50 ms, fastest at the top; colour: precision), each labelled
    with its p50 and top-1 drop; the picked one outlined, those over ``max_drop`` grey
    (:func:`vitedge.report.plot_latency_bars`)."""
    presets = list(dict.fromkeys(r["preset"] for r in board["rows"]))
    panels = [(p, [{**r, "label": f"{r['target']} {r['precision']}"} for r in board["rows"] if r["preset"] == p])
              for p in presets]
    m = board.get("machine") or {}
    s = board["settings"]
    where = f"{m['cpu']}, {m.get('cores')} cores" if m.get("cpu") else board["device"]
    plot_latency_bars(panels, path, title=f"vitedge sweep on {board['device']} ({where}): p50 latency and top-1 "
                                          f"drop on the held-out digits", xlabel=f"p50 latency, batch {s['batch']}, "
                                          f"{s['threads']} threads (ms; shorter is faster)",
                      max_drop=board["max_drop"])


def pick_artifacts(board: dict, artifacts: Path, dest: Path) -> dict[str, Path]:
    """Copy each preset's picked artifact (``board["picked"]``) to ``dest/<preset>/``, atomically (a previous
    vitedge artifact there is replaced; any other folder is refused), and check the copy's SHA-256s.

    Returns:
        preset -> the copy's folder (presets with no pick are left out).
    Raises:
        ArtifactError: ``dest/<preset>`` holds something else than a vitedge artifact, or the copy does not verify.
    """
    out = {}
    for preset, rel in board["picked"].items():
        if rel is None:
            continue
        target = Path(dest) / preset
        with atomic_directory(target, force=True) as tmp:
            shutil.copytree(Path(artifacts) / rel, tmp, dirs_exist_ok=True, symlinks=True)
        read_manifest(target)  # every SHA-256 checked
        out[preset] = target
    return out
