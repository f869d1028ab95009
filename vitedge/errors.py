"""The one exception family that the CLI turns into a one-line message and a non-zero exit."""

import re


class VitedgeError(Exception):
    """Base of every error vitedge reports to a user; the message is one readable line."""

    exit_code = 1


class UsageError(VitedgeError):
    """Bad command-line input (unknown preset or target, bad option value). Exit code 2."""

    exit_code = 2


class ArtifactError(VitedgeError):
    """A missing, corrupt, truncated or unsupported artifact or manifest."""


class SignatureError(ArtifactError):
    """An artifact whose signature (``model.sig``) is missing, malformed, made by a key that is not trusted, or
    does not cover the folder's files as they are now (a file modified, added or removed after signing)."""


class UntrustedCodeError(ArtifactError):
    """A code-bearing artifact (TorchScript, AOTInductor) that is neither signed by a trusted key nor trusted
    explicitly (``--trust-code``); loading it would run code from its author."""


class CheckpointError(VitedgeError):
    """A missing or unreadable checkpoint, or one that does not fit the model."""


class ImageError(VitedgeError):
    """A file that is not a decodable image, or an empty image folder."""


class ExportError(VitedgeError):
    """An export that failed or whose artifact does not reproduce the eager model."""


class RuntimeMissingError(VitedgeError):
    """The runtime an artifact needs is not installed on this machine."""


class PartialArtifactError(RuntimeMissingError):
    """The artifact was written without the part that needs a runtime missing here (e.g. a TensorRT artifact
    holds the ONNX graph and the trtexec command, but no engine). Exit code 3."""

    exit_code = 3


class RemoteError(VitedgeError):
    """A benchmark on another machine over SSH (``vitedge bench --on``) that failed there: the device's own one-line
    error, a transfer or a connection lost mid-run, an unknown host key."""


class HostUnreachableError(RemoteError):
    """The SSH host cannot be reached: name not resolved, connection refused or timed out."""


class AuthRefusedError(RemoteError):
    """The SSH server refused the login (``Permission denied``): wrong user or key."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first informative line of ``e``'s message, at most ``limit`` characters; the exception's type name if the
    message is empty.

    Runtime libraries put their reason below location lines: OpenVINO's messages start with a stack of "Exception
    from src/...cpp:117:" lines (seen: an int8 compile failure whose first line was only that), so those and blank
    lines are skipped.
    """
    lines = [ln.strip() for ln in str(e).splitlines()]
    useful = [ln for ln in lines if ln and not re.fullmatch(r"Exception from \S+:\d+:?", ln)]
    return (useful[0] if useful else type(e).__name__)[:limit]
