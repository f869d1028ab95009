"""``vitedge`` command line: zoo, train, export, validate, bench, sweep, verify, keygen.

Every user-facing failure is one line on stderr (``vitedge: error: ...``) and a non-zero exit: 2 for bad
usage (argparse's own errors included: one line and a pointer to ``--help``, never the usage block), 3 when
``export`` wrote an artifact without the part that needs a runtime missing here (``--target trt`` without
TensorRT or a GPU: model.onnx and trtexec.sh are written, no engine), 1 for everything else (including a failed
parity check). ``VITEDGE_DEBUG=1`` shows tracebacks.

Conventions: rates on the command line are percentages (``--min-top1 99.5`` is 99.5 %, ``--max-drop 1`` is one
percentage point); ``--json -`` writes the JSON to stdout (and no table); long steps print one progress line per
stage on stderr when it is a terminal (``--quiet``: none).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from . import __version__, progress
from .bench import bench
from .device import CUDA_TARGETS, check_target_device, parse_device, require_device
from .errors import UsageError, VitedgeError
from .files import write_json_atomic
from .manifest import MANIFEST, artifact_folder, check_destination, read_manifest
from .models.zoo import FAMILIES, PRESETS, get_preset, preset_counts
from .remote import bench_remote
from .runtime import _check_signed_manifest
from .signing import SIGNATURE, check_private_key, generate_keypair, verify_artifact
from .targets import all_targets, default_int8_options, get_target, target_names
from .targets import int_at_least as _int_at_least


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``vitedge: error: MESSAGE (see PROG --help)``, exit 2, no usage block.

    ``fill`` (an attribute, a function of the parser): adds the parser's arguments the first time it parses or
    formats its help. ``vitedge export``'s flags come from the target registry, which imports torch; filled
    lazily, the other subcommands (``vitedge zoo``) never pay for that import."""

    fill = None

    def _fill(self) -> None:
        fill, self.fill = self.fill, None
        if fill is not None:
            fill(self)

    def parse_known_args(self, args=None, namespace=None):
        self._fill()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._fill()
        return super().format_help()

    def format_usage(self) -> str:
        self._fill()
        return super().format_usage()

    def error(self, message: str):
        self.exit(2, f"vitedge: error: {message} (see {self.prog} --help)\n")


_positive = _int_at_least(1, "positive integer")
_non_negative = _int_at_least(0, "non-negative integer")


def _float_in(low: float, high: float, unit: str = ""):
    """argparse type: a finite float in [low, high] (``unit`` is shown in the error)."""
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {s!r}") from None
        if not (low <= v <= high):  # also refuses NaN
            where = f">= {low:g}" if math.isinf(high) else f"in {low:g}..{high:g}"
            raise argparse.ArgumentTypeError(f"must be {where}{unit}, got {s}")
        return v
    return parse


def _percent(s: str) -> float:
    """argparse type of --min-top1: a percentage 0..100. A value in (0, 1] reads as a fraction (the old
    convention of this flag), so it is refused with the percentage it probably means."""
    v = _float_in(0.0, 100.0, " (a percentage)")(s)
    if 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"is a percentage 0..100; {s} looks like a fraction: write {v * 100:g} "
                                         f"for {v * 100:g} %")
    return v


def _write_json(path: str | None, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` (atomically), or to stdout when ``path`` is ``-``."""
    if path == "-":
        print(json.dumps(obj, indent=2))
    elif path:
        write_json_atomic(path, obj)


def _console():
    """A rich console on stdout: the terminal's width, else $COLUMNS, else 140 columns (pipes, files)."""
    from rich.console import Console
    return Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140)


def cmd_zoo(args) -> int:
    if args.family is not None and args.family not in FAMILIES:
        raise UsageError(f"unknown family {args.family!r}; known: {', '.join(FAMILIES)}")
    names = [n for n, p in PRESETS.items() if args.family is None or p.family == args.family]
    counts: dict = {}
    if args.count:
        counts = preset_counts(names, on_count=lambda n, i, k: progress.stage(f"counting {n} ({i}/{k})"))
    rows = []
    for name in names:
        p = PRESETS[name]
        rows.append({"preset": name, "family": p.family, "input_size": list(p.input_size), **counts.get(name, {}),
                     "paper_params_m": p.paper_params_m, "source": p.source, "paper": p.paper, "citation": p.citation,
                     "note": p.note})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table
    t = Table(title="vitedge zoo" + (" (params and FLOPs counted on the built model, 1 image)" if counts else ""),
              caption=None if counts else "vitedge zoo --count: parameters and FLOPs counted on the built models")
    cols = ["preset", "family", "input"] + (["params (M)", "paper (M)", "GFLOPs", "GMACs"] if counts else
                                            ["paper (M)"])
    for col in cols:
        t.add_column(col, justify="left" if col in ("preset", "family", "input") else "right", no_wrap=True)
    t.add_column("source", overflow="fold")
    for r in rows:
        paper = f"{r['paper_params_m']:.1f}" if r["paper_params_m"] else "-"
        cells = [r["preset"], r["family"], "x".join(map(str, r["input_size"]))]
        cells += [f"{r['params_m']:.2f}", paper, f"{r['gflops']:.2f}", f"{r['gmacs']:.2f}"] if counts else [paper]
        t.add_row(*cells, r["source"])
    _console().print(t)
    return 0


def _graph_line(g: dict) -> str:
    """One line from a manifest's ``export.graph`` block: ``graph: 394 nodes (632 before constant folding)``; the
    count right after folding is added when the target's own steps (fusions, quantization) changed the graph."""
    what = "graph" if g.get("file") else "ONNX graph converted"
    if g.get("folding_skipped"):
        return f"{what}: {g['nodes']} nodes (constant folding skipped: {g['folding_skipped']})"
    line = f"{what}: {g['nodes']} nodes ({g['nodes_before_folding']} before constant folding"
    if g["nodes"] != g["nodes_after_folding"]:
        line += f", {g['nodes_after_folding']} right after it"
    return line + ")"


def _parse_batch(s: str) -> int | None:
    if s == "dynamic":
        return None
    try:
        b = int(s)
    except ValueError:
        raise UsageError(f"--batch must be a positive integer or 'dynamic', got {s!r}") from None
    if b < 1:
        raise UsageError(f"--batch must be >= 1, got {b}")
    return b


def cmd_export(args) -> int:
    import torch

    from .export import check_precision, export, prepare_preset
    from .quantize import calibration_split
    target = get_target(args.target)  # UsageError for an unknown one, with close matches
    if args.precision is None:  # e.g. Core ML computes in fp16 by default (coremltools' mlprogram default)
        args.precision = target.default_precision
    check_precision(args.target, args.precision, args.int8_mode)  # fail before building anything
    check_target_device(args.target, parse_device(args.device), args.precision)
    require_device(args.device)
    if args.sign:
        check_private_key(args.sign)
    recipe = {}
    if args.precision == "int8":
        recipe = default_int8_options(args.target, get_preset(args.preset).family, args.int8_mode)
        if args.calib_method:
            recipe["method"] = args.calib_method
    static = recipe.get("mode") == "static"
    if (args.calib is not None or args.calib_method) and not static:
        one = next((t.name for t in all_targets() if "static" in (t.precisions.get("int8") or ())), "TARGET")
        raise UsageError(f"--calib/--calib-method are used by static int8 only (--precision int8 --target {one} "
                         "--int8-mode static)")
    target_options: dict = {}
    for t in all_targets():  # each target's own flags (its Options): checked for it, refused for the others
        given = t.options_from_args(args)
        if t is target:
            t.check_options(given, args.precision)  # UsageError before building anything
            target_options = given
        elif given:
            raise UsageError(t.misuse_message())
    if ":" in args.batch:
        if not target.batch_range:
            what = "; ".join(f"{t.batch_range} (--target {t.name})" for t in all_targets() if t.batch_range)
            raise UsageError(f"--batch {args.batch}: MIN:OPT:MAX is {what or 'taken by no target'}; use a batch size "
                             f"N or 'dynamic'")
        target_options.update(target.batch_options(args.batch))
        batch = None
    else:
        batch = _parse_batch(args.batch)
    outputs = tuple(o.strip() for o in args.outputs.split(",") if o.strip()) if args.outputs else None
    suffix = "" if args.precision == "fp32" else f"-{args.precision}"
    out = Path(args.output or f"artifacts/{args.preset}-{args.target}{suffix}")
    progress.stage(f"building {args.preset}" + (f" from {args.checkpoint}" if args.checkpoint else ""))
    model, spec, pre = prepare_preset(args.preset, checkpoint=args.checkpoint, num_classes=args.num_classes,
                                      image_size=tuple(args.image_size) if args.image_size else None,
                                      outputs=outputs)
    check_destination(out, args.force)  # before any export work (usage errors above keep exit code 2)
    example = torch.zeros(batch or 2, 3, *pre["size"])
    quant = held = None
    if args.precision == "int8":
        quant = dict(recipe)
        if static:
            progress.stage(f"loading {args.calib_count} calibration images ({args.calib or 'digits'}) and held-out "
                           "images for parity")
            x, info, held = calibration_split(args.calib or "digits", pre, args.calib_count)
            quant.update(method=recipe.get("method", "minmax"), calibration=x.numpy(), calibration_info=info)
    labels = (spec.get("training") or {}).get("labels")
    art = export(model, example, args.target, out, spec=spec, preprocessing=pre, dynamic_batch=batch is None,
                 opset=args.opset, precision=args.precision, quantization=quant, labels=labels,
                 target_options=target_options, sign_key=args.sign, force=args.force, device=args.device,
                 parity_images=held)
    target.after_export(art, args.precision)  # e.g. TensorRT without an engine: one line, exit 3
    p = art.manifest["parity"]
    on = "photos" if p.get("images") == "bundled scikit-image photos" else p.get("images")
    head = f"wrote {art.file} ({args.precision}, {art.size_mb:.2f} MB, {art.manifest['export']['method']})"
    if "skipped" in p:
        print(f"{head}; parity {p['skipped']}")
    else:
        worst = max(v["max_abs"] for k, v in p.items() if k.startswith("batch_"))
        cos = min(v["cosine"] for k, v in p.items() if k.startswith("batch_"))
        print(f"{head}; parity vs fp32 eager on {on}: max abs diff {worst:.2e}, min cosine {cos:.6f} at batches "
              f"{', '.join(k[6:] for k in p if k.startswith('batch_'))}")
        h = p.get("held_out") or {}
        if "drop_points" in h:
            print(f"top-1 on the {h['samples']} held-out images: {h['top1']:.2%} (fp32 eager {h['eager_top1']:.2%}, "
                  f"drop {h['drop_points']:+.2f} points); min cosine over all of them {h['cosine']:.6f}")
    graph = (art.manifest.get("export") or {}).get("graph")
    if isinstance(graph, dict):
        print(_graph_line(graph))
    q = art.manifest.get("quantization") or {}
    if q.get("kept_float_nodes") is not None:
        print(f"int8: {q['quantized_nodes']} {'/'.join(q['quantized_op_types'])} nodes quantized; kept in float: "
              f"{len(q['kept_float_nodes'])} nodes (first/last weight ops, attention matmuls) and "
              f"{', '.join(q['kept_float_op_types']) or 'no other ops'}")
    speed = q.get("speed") or {}
    if speed.get("faster") == "fp32":  # the user's precision stands; say which one is faster here
        print(f"vitedge: warning: int8 ran at {speed['speed_vs_fp32']:.2f}x the latency of fp32 ({speed['int8_p50_ms']:.3f} "
              f"vs {speed['fp32_p50_ms']:.3f} ms p50, batch 1, {speed['threads']} threads, {art.manifest['backend']} on "
              f"this machine): --precision fp32 is faster here", file=sys.stderr)
    elif "speed_vs_fp32" in speed:
        print(f"int8 vs fp32 on this machine: {speed['speed_vs_fp32']:.2f}x the latency ({speed['int8_p50_ms']:.3f} vs "
              f"{speed['fp32_p50_ms']:.3f} ms p50, batch 1, {speed['threads']} threads)")
    return 0


def cmd_validate(args) -> int:
    from .validate import validate
    top1 = None if args.min_top1 is None else args.min_top1 / 100  # the library's tolerance is a fraction
    tol = {"max_abs": args.max_abs, "top1_agreement": top1, "cosine": args.min_cosine,
           "max_drop_points": args.max_drop}
    progress.stage(f"opening {args.artifact}")
    r = validate(args.artifact, images=args.images, tolerance=tol, threads=args.threads,
                 verify=not args.no_verify, dataset=args.dataset, trusted_keys=args.key, trust_code=args.trust_code,
                 device=args.device)
    _write_json(args.json, r)
    if args.json == "-":
        return _validate_exit(r)
    m = r["metrics"]
    from rich.table import Table
    where = f"{r['dataset']['name']} test split" if "dataset" in r else "photos"
    # One metric per row: it fits an 80-column terminal whatever the numbers (a row per metric, never truncated).
    tab = Table(title=f"{r['artifact']} ({r['runtime']}, {r['precision']}) vs fp32 eager PyTorch on {m['samples']} "
                      f"{where}")
    tab.add_column("metric", no_wrap=True)
    tab.add_column("value", justify="right", no_wrap=True)
    rows = [("max abs diff", f"{m['max_abs']:.2e}"), ("max rel diff", f"{m['max_rel']:.2e}"),
            ("cosine (min)", f"{m['cosine']:.6f}"), ("top-1 agreement", f"{m['top1_agreement']:.1%}"),
            ("top-5 agreement", f"{m['top5_agreement']:.1%}")]
    if "top1" in m:
        rows += [("top-1 artifact", f"{m['top1']:.2%}"), ("top-1 fp32 eager", f"{m['eager_top1']:.2%}"),
                 ("drop (points)", f"{m['drop_points']:+.2f}")]
    for name, value in rows:
        tab.add_row(name, value)
    tab.add_row("result", "[green]PASS[/]" if r["passed"] else "[red]FAIL[/]")
    _console().print(tab)
    return _validate_exit(r)


def _validate_exit(r: dict) -> int:
    if not r["passed"]:
        print(f"vitedge: error: outside tolerance: {'; '.join(r['failures'])}", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args) -> int:
    if args.on:
        return _bench_on(args)
    if args.ssh_option or args.runner_prefix or args.remote_tmp:
        raise UsageError("--ssh-option, --runner-prefix and --remote-tmp go with --on ssh://HOST")
    progress.stage(f"opening {args.artifact}")
    r = bench(args.artifact, batch=args.batch, threads=args.threads, warmup=args.warmup, iters=args.iters,
              images=args.images, input_size=tuple(args.input_size) if args.input_size else None,
              progress=progress.enabled(), verify=not args.no_verify,
              trusted_keys=args.key, trust_code=args.trust_code, device=args.device)
    _write_json(args.json, r)
    if args.json != "-":
        _console().print(bench_table(r))
    return 0


def _bench_on(args) -> int:
    """``vitedge bench ARTIFACT --on ssh://...``: the C++ runner on the device (vitedge.remote)."""
    if args.images or args.input_size:
        raise UsageError("--images and --input-size do not apply with --on: the device's vitedge-bench times a seeded "
                         "standard-normal batch of the artifact's input size")
    r = bench_remote(args.artifact, args.on, batch=args.batch, threads=args.threads, warmup=args.warmup,
                     iters=args.iters, ssh_options=args.ssh_option or (), verify=not args.no_verify,
                     trusted_keys=args.key, trust_code=args.trust_code,
                     device=None if args.device == "cpu" else args.device, runner_prefix_dir=args.runner_prefix,
                     remote_tmp=args.remote_tmp)
    _write_json(args.json, r)
    if args.json != "-":
        _console().print(bench_table(r))
    return 0


def bench_table(r: dict):
    """The rich table ``vitedge bench`` prints for a result ``r`` of :func:`vitedge.bench.bench`: latencies in ms,
    throughput in images/s; the peak RSS and the artifact's size (MiB), the CPU and the run counts in the caption.
    It fits an 80-column terminal (8 short columns, header-only rules); the long texts (artifact path, CPU name
    and ISA flags) are in the title and caption, which wrap."""
    from rich import box
    from rich.table import Table
    lat = r["latency_ms"]
    m = r["machine"]
    on = f" on {r['remote']['url']} ({r['remote']['arch']})" if "remote" in r else ""
    t = Table(title=f"vitedge bench {r['artifact']}{on}", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              collapse_padding=True,
              caption=f"peak RSS {r['peak_rss_mb']:.0f} MiB, artifact {r['artifact_mb']:.2f} MiB; {r['iters']} timed "
                      f"runs after {r['warmup']} warm-up; {m['cpu']} ({', '.join(m['flags']) or 'no ISA flags'})")
    t.add_column("runtime", overflow="fold")
    for col in ("batch", "threads", "mean ms", "p50 ms", "p90 ms", "p99 ms", "img/s"):
        t.add_column(col, justify="right", overflow="fold")
    runtime = r["runtime"] + ("" if r["device"] == "cpu" else f" ({r['device']})")
    t.add_row(runtime, str(r["batch"]), str(r["threads"]), f"{lat['mean']:.2f}", f"{lat['p50']:.2f}",
              f"{lat['p90']:.2f}", f"{lat['p99']:.2f}", f"{r['throughput_ips']:.1f}")
    return t


def cmd_verify(args) -> int:
    folder = artifact_folder(args.artifact)  # the folder, or the model file in it, as validate and bench take
    r = verify_artifact(folder, args.key)
    if MANIFEST in r["files"]:  # a vitedge artifact: its manifest must also record the signed digests
        _check_signed_manifest(read_manifest(args.artifact, verify=False), r)
    print(f"verified {folder / SIGNATURE}: signed by {r['key']} (fingerprint {r['fingerprint'][:16]}), "
          f"{len(r['files'])} files match")
    return 0


def cmd_keygen(args) -> int:
    priv, pub = generate_keypair(args.output)
    print(f"wrote {priv} (private, mode 0600: sign with vitedge export --sign {priv}) and {pub} (public: check with "
          f"--key {pub})")
    return 0


def _trust_args(p, required_key: bool = False) -> None:
    p.add_argument("--key", action="append", metavar="PUB.pem", required=required_key,
                   help="trusted public key (PEM, P-256/P-384/P-521; repeatable): the artifact's model.sig must "
                        "verify with one of them before anything is loaded")
    if not required_key:
        p.add_argument("--trust-code", action="store_true",
                       help="load an unsigned TorchScript or AOTInductor artifact (they run code when loaded): only "
                            "for artifacts from a source you trust")


def cmd_train(args) -> int:
    from .train import train_digits
    if args.dataset != "digits":
        raise UsageError(f"unknown dataset {args.dataset!r} (known: digits)")
    out = args.output or f"artifacts/checkpoints/{args.preset}-digits.safetensors"
    train_digits(args.preset, out, image_size=tuple(args.image_size) if args.image_size else None,
                 epochs=args.epochs, seed=args.seed)
    return 0


def _checkpoint_arg(s: str) -> tuple[str, str]:
    preset, sep, path = s.partition("=")
    if not sep or not preset or not path:
        raise argparse.ArgumentTypeError(f"must be PRESET=PATH, got {s!r}")
    return preset, path


def cmd_sweep(args) -> int:
    from .sweep import SweepConfig, sweep
    out = Path(args.output)
    cfg = SweepConfig(presets=args.presets, out=out, artifacts=Path(args.artifacts) if args.artifacts else None,
                      targets=args.targets, precisions=tuple(args.precisions), devices=tuple(args.on or ("local",)),
                      image_size=tuple(args.image_size), epochs=args.epochs, seed=args.seed,
                      checkpoints=dict(args.checkpoint or ()), calib_count=args.calib_count, batch=args.batch,
                      threads=args.threads, warmup=args.warmup, iters=args.iters, max_drop=args.max_drop,
                      jobs=args.jobs, executor=args.executor, ray_address=args.ray_address, force=args.force,
                      plugins=tuple(args.plugin or ()), pick=Path(args.pick) if args.pick else None,
                      ssh_options=tuple(args.ssh_option or ()))
    sweep(cfg)
    return 0


ARTIFACT_HELP = "artifact folder (holding manifest.json), or its model file (model.onnx, model.pt, model.mlpackage, ...)"


def _quiet_arg(p, *aliases: str) -> None:
    p.add_argument("-q", "--quiet", *aliases, action="store_true", dest="quiet",
                   help="no progress lines on stderr (they are shown only when stderr is a terminal)")


PRECISION_ORDER = ("fp32", "fp16", "bf16", "int8")  # how --precision lists the precisions the targets produce
INT8_MODE_HELP = {"static": "calibrated QDQ", "dynamic": "int8 weights, activations quantized at run time",
                  "weights": "weight-only int8, activations stay float"}


def _ordered(names, order) -> list[str]:
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


def _export_arguments(e: argparse.ArgumentParser) -> None:
    """``vitedge export``'s arguments: the generic ones, and one argument group per target (its ``Options``)."""
    targets = all_targets()
    e.add_argument("preset")
    e.add_argument("--target", required=True, help=" | ".join(target_names()))
    e.add_argument("--batch", default="dynamic",
                   help="fixed batch size, or 'dynamic' (default)" + "".join(
                       f"; for --target {t.name} also MIN:OPT:MAX, {t.batch_range_help or t.batch_range}"
                       for t in targets if t.batch_range))
    e.add_argument("--image-size", nargs=2, type=_positive, metavar=("H", "W"),
                   help="input size in pixels (default: the preset's)")
    e.add_argument("--checkpoint", help="state_dict to load (.safetensors, or .pt read with weights_only=True)")
    e.add_argument("--num-classes", type=_positive, help="classifier size (must match the checkpoint)")
    e.add_argument("--opset", type=_positive, help="ONNX opset (default 18; the legacy fallback uses 17)")
    e.add_argument("--outputs", help="graph outputs, comma-separated from logits,attentions,embeddings "
                                     "(ViT-style models; default: the model's own outputs)")
    e.add_argument("--precision", choices=_ordered((p for t in targets for p in t.precisions), PRECISION_ORDER),
                   help="; ".join(["default fp32"] + [t.precision_help for t in targets if t.precision_help]))
    int8 = [t for t in targets if t.precisions.get("int8")]
    modes = _ordered((m for t in int8 for m in t.precisions["int8"]), INT8_MODE_HELP)
    e.add_argument("--int8-mode", choices=modes,
                   help="; ".join(f"{m}: {INT8_MODE_HELP[m]}" if m in INT8_MODE_HELP else m for m in modes)
                   + ". By target: " + "; ".join(f"{t.name} {', '.join(t.precisions['int8'])}" for t in int8)
                   + " (default: the target's recipe for the preset's family)")
    e.add_argument("--calib", help="calibration images for static int8: a folder, or 'digits' (train split; default)")
    e.add_argument("--calib-method", choices=["minmax", "percentile", "entropy"],
                   help="static int8 calibration (default minmax)")
    e.add_argument("--calib-count", type=_positive, default=128, help="number of calibration images (default 128)")
    for t in targets:
        t.add_arguments(e)
    e.add_argument("--device", default="cpu",
                   help=f"cpu (default), cuda or cuda:N: export for that device ({' and '.join(CUDA_TARGETS)} only; "
                        "the artifact then runs on that kind of device)")
    e.add_argument("-o", "--output", help="artifact directory (default artifacts/PRESET-TARGET); must not exist, be "
                                          "empty, or (with --force) hold a previous vitedge artifact")
    e.add_argument("--force", action="store_true", help="replace the previous vitedge artifact at -o (anything else "
                                                         "there is never replaced)")
    e.add_argument("--sign", metavar="KEY.pem",
                   help="sign the artifact (model.sig, OpenSSF model-signing) with this elliptic-curve private key "
                        "before it appears (vitedge keygen makes one)")
    _quiet_arg(e)


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """The argparse parser of the ``vitedge`` command. ``lazy``: ``vitedge export``'s arguments are added when
    that subcommand parses or formats its help (they come from the target registry, which imports every target
    module and so torch); :func:`main` builds it so, to keep the other subcommands fast."""
    ap = _Parser(prog="vitedge", description="Export, validate and benchmark Vision Transformers.")
    ap.add_argument("--version", action="version", version=f"vitedge {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ap.subcommands = sub.choices  # main() reports an unknown option against its subcommand's parser

    z = sub.add_parser("zoo", help="list the model presets (with --count: params and FLOPs)")
    z.add_argument("--json", action="store_true", help="print JSON on stdout instead of a table")
    z.add_argument("--family", metavar="FAMILY", help=f"only this family, one of the {len(FAMILIES)}: "
                                                      f"{', '.join(FAMILIES)}")
    z.add_argument("--count", action="store_true",
                   help="count parameters and FLOPs (one 1x3xHxW image) on the built models: seconds per model the "
                        "first time, then read from a cache (~/.cache/vitedge, or $VITEDGE_CACHE_DIR) that is "
                        "refreshed whenever the model code changes")
    z.set_defaults(func=cmd_zoo)

    e = sub.add_parser("export", help="export a preset to an artifact directory (file + manifest.json)")
    e.fill = _export_arguments  # from the target registry: torch is imported only when export parses or helps
    if not lazy:
        e._fill()
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("validate", help="parity of an artifact vs eager PyTorch on real images",
                       description="Parity of an artifact vs eager PyTorch on real images. Rates are percentages: "
                                   "--min-top1 99.5 means 99.5 % of the images keep their top-1 class, --max-drop 1 "
                                   "allows one percentage point of top-1 accuracy lost.")
    v.add_argument("artifact", help=ARTIFACT_HELP)
    v.add_argument("--images", help="folder of JPEG/PNG images (default: scikit-image's bundled photos)")
    v.add_argument("--json", metavar="PATH", help="write the result JSON to PATH ('-': stdout, instead of the table)")
    v.add_argument("--max-abs", type=_float_in(0.0, math.inf), metavar="X",
                   help="tolerance on the max abs difference of the outputs (default 1e-4 for fp32)")
    v.add_argument("--min-top1", type=_percent, metavar="PCT",
                   help="minimum top-1 agreement with eager, a percentage 0..100 (default 100 for fp32; values up "
                        "to 1 are refused as fractions)")
    v.add_argument("--min-cosine", type=_float_in(-1.0, 1.0), metavar="C",
                   help="minimum cosine similarity, -1..1 (default 0.999 fp16, 0.99 int8)")
    v.add_argument("--dataset", choices=["digits"], help="accuracy on a labelled test split instead of photos")
    v.add_argument("--max-drop", type=_float_in(-100.0, 100.0, " (percentage points)"), metavar="POINTS",
                   help="max top-1 accuracy drop vs fp32 eager, in percentage points (default 1.0)")
    v.add_argument("--threads", type=_positive, help="intra-op threads (default: the runtime's)")
    v.add_argument("--no-verify", action="store_true", help="skip the manifest's SHA-256 check")
    v.add_argument("--device", default="cpu",
                   help=f"run the artifact on cpu (default), cuda or cuda:N ({' and '.join(CUDA_TARGETS)} only); the "
                        "eager reference runs on the CPU")
    _trust_args(v)
    v.set_defaults(func=cmd_validate)

    t = sub.add_parser("train", help="train a preset on a bundled labelled data set (safetensors checkpoint)")
    t.add_argument("--preset", required=True)
    t.add_argument("--dataset", default="digits", help="digits (scikit-learn's handwritten digits)")
    t.add_argument("--image-size", nargs=2, type=_positive, metavar=("H", "W"),
                   help="input size in pixels (default 64 64)")
    t.add_argument("--epochs", type=_positive, default=12)
    t.add_argument("--seed", type=_non_negative, default=0)
    t.add_argument("-o", "--output", help="checkpoint path (default artifacts/checkpoints/PRESET-digits.safetensors)")
    _quiet_arg(t)
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("bench", help="latency/throughput of an artifact in its runtime")
    b.add_argument("artifact", help=ARTIFACT_HELP)
    b.add_argument("--batch", type=_positive, default=1)
    b.add_argument("--threads", type=_positive, help="intra-op threads (default: all usable CPUs)")
    b.add_argument("--warmup", type=_non_negative, default=10, help="untimed runs first (default 10)")
    b.add_argument("--iters", type=_positive, default=50, help="timed runs (default 50)")
    b.add_argument("--images", help="folder of images (default: the bundled photos)")
    b.add_argument("--input-size", nargs=2, type=_positive, metavar=("H", "W"),
                   help="synthetic input of this size in pixels")
    b.add_argument("--json", metavar="PATH", help="write the result JSON to PATH ('-': stdout, instead of the table)")
    _quiet_arg(b, "--no-progress")
    b.add_argument("--no-verify", action="store_true", help="skip the manifest's SHA-256 check")
    b.add_argument("--device", default="cpu",
                   help=f"cpu (default), cuda or cuda:N ({' and '.join(CUDA_TARGETS)} artifacts only)")
    _trust_args(b)
    b.add_argument("--on", metavar="ssh://[USER@]HOST[:PORT]",
                   help="run the C++ runner on that machine over SSH (OpenSSH's ssh, your ~/.ssh/config): sends it "
                        "with the artifact, benchmarks there, removes everything (docs/on-device.md)")
    b.add_argument("--ssh-option", action="append", metavar="KEY=VALUE",
                   help="with --on: an ssh -o option, e.g. IdentityFile=~/.ssh/pi_ed25519 (repeatable)")
    b.add_argument("--runner-prefix", metavar="DIR",
                   help="with --on: an installed runner prefix (cmake --install) built for the device's architecture "
                        "(default: build/cpp, or build/arm64 for an aarch64 device)")
    b.add_argument("--remote-tmp", metavar="DIR", help="with --on: folder on the device for the run's temporary "
                                                       "folder (default $TMPDIR or /tmp)")
    b.set_defaults(func=cmd_bench)

    w = sub.add_parser("sweep", help="presets x targets x precisions: export, validate, bench; one leaderboard per "
                                     "device (resumable)",
                       description="Train each preset on the digits once, then for each target x precision: export, "
                                   "parity, top-1 drop on the held-out digits, bench; one leaderboard per device "
                                   "(markdown, JSON, plot) with the fastest artifact within --max-drop picked. A "
                                   "re-run skips the cells already done with the same inputs.")
    w.add_argument("--presets", nargs="+", required=True, metavar="PRESET", help="zoo presets (vitedge zoo)")
    w.add_argument("--targets", nargs="+", metavar="TARGET",
                   help=f"default: all ({', '.join(target_names())}); those that cannot run here are listed with why")
    w.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=list(PRECISION_ORDER),
                   help="default fp32 int8")
    w.add_argument("--on", nargs="+", metavar="DEVICE",
                   help="where the timing cells run: local (this machine, the default) and/or ssh://[user@]host[:port]")
    w.add_argument("-o", "--output", default="artifacts/sweep",
                   help="sweep folder: cells/ and DEVICE/leaderboard.{md,json,png} (default artifacts/sweep)")
    w.add_argument("--artifacts", metavar="DIR", help="checkpoints and artifacts (default OUTPUT/artifacts)")
    w.add_argument("--image-size", nargs=2, type=_positive, default=[64, 64], metavar=("H", "W"),
                   help="training and export size in pixels (default 64 64, the digits training size)")
    w.add_argument("--epochs", type=_positive, default=12, help="digits training epochs (default 12)")
    w.add_argument("--seed", type=_non_negative, default=0)
    w.add_argument("--checkpoint", action="append", type=_checkpoint_arg, metavar="PRESET=PATH",
                   help="use this checkpoint (vitedge train) for PRESET instead of training one (repeatable)")
    w.add_argument("--calib-count", type=_positive, default=128, help="static int8 calibration images (default 128)")
    w.add_argument("--batch", type=_positive, default=1, help="timing batch (default 1)")
    w.add_argument("--threads", type=_positive, help="timing threads (default: all usable CPUs)")
    w.add_argument("--warmup", type=_non_negative, default=10, help="untimed runs per artifact (default 10)")
    w.add_argument("--iters", type=_positive, default=50, help="timed runs per artifact (default 50)")
    w.add_argument("--max-drop", type=_float_in(-100.0, 100.0, " (percentage points)"), default=0.5,
                   metavar="POINTS", help="top-1 drop allowed for the pick, in points (default 0.5)")
    w.add_argument("--pick", metavar="DIR", help="copy each preset's picked artifact to DIR/PRESET/")
    w.add_argument("--jobs", type=_positive, help="export processes (default: all usable CPUs)")
    w.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: a process pool here (default); ray: Ray tasks on the cluster at --ray-address")
    w.add_argument("--ray-address", metavar="ADDR", help="a running Ray cluster (auto, HOST:6379, ray://HOST:10001)")
    w.add_argument("--ssh-option", action="append", metavar="KEY=VALUE",
                   help="an ssh -o option for the ssh:// devices (repeatable), as in vitedge bench --on")
    w.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import this Python module first in every process (it registers a family or target)")
    w.add_argument("--force", action="store_true", help="redo every cell, done or not")
    _quiet_arg(w)
    w.set_defaults(func=cmd_sweep)

    s = sub.add_parser("verify", help="check an artifact's signature (model.sig) against trusted public keys")
    s.add_argument("artifact", help=ARTIFACT_HELP)
    _trust_args(s, required_key=True)
    s.set_defaults(func=cmd_verify)

    k = sub.add_parser("keygen", help="write a new P-256 key pair for vitedge export --sign")
    k.add_argument("-o", "--output", required=True, metavar="PREFIX",
                   help="writes PREFIX.pem (private, mode 0600) and PREFIX.pub.pem (public); never overwrites")
    k.set_defaults(func=cmd_keygen)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vitedge`` console script; returns the exit code."""
    ap = build_parser(lazy=True)
    args, extra = ap.parse_known_args(argv)
    if extra:  # argparse would name the top-level parser; the option belongs to (or was meant for) the subcommand
        ap.subcommands.get(args.command, ap).error(f"unrecognized arguments: {' '.join(extra)}")
    progress.enable(False if getattr(args, "quiet", False) else None)
    try:
        return args.func(args)
    except VitedgeError as e:
        if os.environ.get("VITEDGE_DEBUG"):
            raise
        print(f"vitedge: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("vitedge: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - never a library traceback for a user; VITEDGE_DEBUG=1 shows it
        if os.environ.get("VITEDGE_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"vitedge: error: unexpected {type(e).__name__}: {msg[:300]} (set VITEDGE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        progress.enable(False)


if __name__ == "__main__":
    sys.exit(main())
