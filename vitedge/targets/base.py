"""The :class:`Target` interface: everything vitedge knows about one export target, in one class.

A target is a subclass of :class:`Target` decorated with :func:`vitedge.targets.register_target`. Its class
attributes declare what it can do (name, precisions, CLI option flags, ...); its methods write an artifact, load
one, say whether this machine can run it, and choose its int8 recipe. The CLI, the export driver, the runtime and
the quantization defaults ask the registry (:func:`vitedge.targets.get_target`) and never branch on a target name.

Built-in targets keep their implementation as module functions (``write``, ``load``, ``runs_here``) next to the
class; the base class delegates to those functions of the module that defines the subclass, so such a class is
declarations only. A target defined elsewhere (a test, a plug-in) overrides :meth:`Target.write` and
:meth:`Target.load` instead.

This module imports nothing heavy (no torch, no runtime): ``vitedge zoo`` and ``vitedge --help`` stay fast.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import UsageError

if TYPE_CHECKING:  # annotations only
    from ..manifest import Artifact

__all__ = ["Target", "int_at_least", "option_fields", "positive_int"]


def int_at_least(low: int, what: str = "integer"):
    """argparse type: an int >= ``low`` (a one-line error otherwise)."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {what}, got {s!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be a {what}, got {v}")
        return v
    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = int_at_least(1, "positive integer")


def option_fields(options_cls) -> list[dataclasses.Field]:
    """The fields of a target's ``Options`` dataclass that are CLI flags (``metadata["flag"]``), in order."""
    if options_cls is None:
        return []
    return [f for f in dataclasses.fields(options_cls) if f.metadata.get("flag")]


def _flag_dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


class Target:
    """One export target. Subclass it, set the class attributes, decorate with ``@register_target``.

    Class attributes:
        name: the ``--target`` name and the manifest's ``target`` (lowercase; unique).
        title: human name, e.g. "TensorRT": titles the CLI's option group "TensorRT (--target trt)".
        precisions: ``{"fp32": None, "fp16": None, "int8": ("static", "dynamic")}``: each precision it can
            produce; for int8 the modes it can do, the first being the default when the target has no family rule.
        default_precision: what ``vitedge export`` uses without ``--precision`` (fp32; Core ML fp16).
        precision_help: a phrase for ``--precision``'s help when the target has something to say (or None).
        code_bearing: what the artifact file is when loading it runs code its author chose (e.g. "TorchScript
            file"): :func:`vitedge.runtime.open_artifact` then loads it only when signed by a trusted key or with
            ``trust_code``. None for data formats.
        Options: a dataclass of the target's own options, or None. Each field whose ``metadata`` holds ``"flag"``
            becomes a CLI flag in the target's argument group; the other metadata keys (``help``, ``metavar``,
            ``type``, ``choices``, ``action``) are passed to ``argparse.add_argument``. The flag's default is None
            ("not given"); ``vitedge export`` passes the given ones to :meth:`write` as
            ``options["target_options"]`` (field name -> value) and refuses them with another target.
        options_summary: how the misuse error names the flags (default: all flags joined with "and").
        options_noun: what they are in that error (default "<title> options").
        batch_range: a phrase naming what ``--batch MIN:OPT:MAX`` means for this target (e.g. "a TensorRT
            optimization profile"), or None when the target takes only N or 'dynamic'; see :meth:`batch_options`.
        batch_range_help: what ``--batch``'s help says about that range.
        exit_codes: the special exit codes the target's CLI path may return, for the docs (e.g. ``{3: "..."}``).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    precisions: ClassVar[dict[str, Any]] = {"fp32": None}
    default_precision: ClassVar[str] = "fp32"
    precision_help: ClassVar[str | None] = None
    code_bearing: ClassVar[str | None] = None
    Options: ClassVar[type | None] = None
    options_summary: ClassVar[str | None] = None
    options_noun: ClassVar[str | None] = None
    batch_range: ClassVar[str | None] = None
    batch_range_help: ClassVar[str | None] = None
    exit_codes: ClassVar[dict[int, str]] = {}

    # ---- implementation: by default the module functions next to the subclass ----------------------------------
    def _module(self, need: str | None = None):
        """The module defining this class (None if it is not one, e.g. a class made in ``exec``); ``need``: a
        function it must have (NotImplementedError otherwise: override the method)."""
        mod = sys.modules.get(type(self).__module__)
        if need is not None and not callable(getattr(mod, need, None)):
            raise NotImplementedError(f"target {self.name}: {type(self).__name__} must define {need}() (or its "
                                      f"module {type(self).__module__} a function {need})")
        return mod

    def write(self, model, example, directory, options: dict) -> dict:
        """Write the artifact into ``directory``; returns the target dict :func:`vitedge.export.export` reads
        (``artifact``, ``backend``, ``export``, optional ``quantization``, ``manifest``, ``parity_batches``,
        ``opset``). ``options``: input/output names, dynamic_batch, opset, precision, quantization,
        target_options, preprocessing, labels, spec, target, device. Default: the module's ``write``."""
        return self._module("write").write(model, example, directory, options)

    def load(self, artifact: Artifact, threads: int | None = None, **kwargs):
        """A runner for ``artifact`` (``run(x) -> list of arrays`` and ``runtime``); ``device=`` is passed only
        to targets that run on CUDA. Default: the module's ``load``."""
        return self._module("load").load(artifact, threads, **kwargs)

    def unavailable(self) -> str | None:
        """None when this machine can run the target's artifacts, else the one-line reason (export then writes
        without the parity run; validate/bench refuse). Default: the module's ``runs_here()``, else None."""
        check = getattr(self._module(), "runs_here", None)
        return check() if check else None

    # ---- quantization -----------------------------------------------------------------------------------------
    def default_int8_mode(self, family: str | None) -> str:
        """The int8 mode used for a zoo ``family`` without ``--int8-mode``: the first of ``precisions["int8"]``."""
        return self.precisions["int8"][0]

    def default_int8_options(self, family: str | None, mode: str | None = None) -> dict:
        """The int8 options ``vitedge export --precision int8`` uses for a zoo ``family`` (None: outside the zoo);
        ``mode`` (``--int8-mode``) overrides the recipe's. Calibration images are added by the caller."""
        return {"mode": mode or self.default_int8_mode(family)}

    # ---- CLI hooks ------------------------------------------------------------------------------------------------
    @classmethod
    def option_flags(cls) -> list[str]:
        return [f.metadata["flag"] for f in option_fields(cls.Options)]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the target's argument group (one flag per ``Options`` field) to ``vitedge export``'s parser."""
        fields = option_fields(cls.Options)
        if not fields:
            return
        g = parser.add_argument_group(f"{cls.title or cls.name} (--target {cls.name})")
        for f in fields:
            kw = {k: v for k, v in f.metadata.items() if k != "flag"}
            kw.setdefault("default", None)
            g.add_argument(f.metadata["flag"], dest=_flag_dest(f.metadata["flag"]), **kw)

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> dict:
        """The target's options given on the command line (field name -> value; flags left out are absent)."""
        out = {}
        for f in option_fields(cls.Options):
            v = getattr(args, _flag_dest(f.metadata["flag"]), None)
            if v is not None:
                out[f.name] = v
        return out

    @classmethod
    def misuse_message(cls) -> str:
        """The one-line error for this target's flags given with another ``--target``."""
        flags = cls.options_summary or " and ".join(cls.option_flags())
        noun = cls.options_noun or f"{cls.title or cls.name} options"
        return f"{flags} are {noun} (--target {cls.name})"

    def check_options(self, options: dict, precision: str) -> None:
        """Raise UsageError for bad target options, before anything is built. Default: nothing to check."""

    def batch_options(self, text: str) -> dict:
        """Target options for ``--batch MIN:OPT:MAX`` (only called when :attr:`batch_range` is set)."""
        raise UsageError(f"--batch {text}: target {self.name} takes a batch size N or 'dynamic'")

    def after_export(self, art: Artifact, precision: str) -> None:
        """Called by ``vitedge export`` once the artifact is committed, before the summary lines. A target whose
        artifact may lack the part that needs a runtime missing here prints what it wrote and raises
        :class:`vitedge.errors.PartialArtifactError` (exit code 3). Default: nothing."""

    def __repr__(self) -> str:
        return f"<target {self.name}>"
