// Internal: reading artifact files once (no hash-then-reopen race), and structural checks of model files
// (zip archives, ONNX external data) made on the bytes before a runtime sees them. Not installed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vitedge/runner.h"

namespace vitedge {

/// manifest.json and model.sig are refused above this size (checked with fstat before reading): 16 MiB.
constexpr uint64_t kMaxManifestBytes = uint64_t{16} << 20;
/// A model file (the manifest's "artifact") is refused above this size: 16 GiB.
constexpr uint64_t kMaxModelFileBytes = uint64_t{16} << 30;

/// Read the file at `path` once: open(O_RDONLY | O_NONBLOCK | O_CLOEXEC) (a FIFO cannot block the open),
/// fstat the descriptor: it must be a regular file (FIFO, device, socket, directory: refused) of at most
/// `max_bytes` bytes and, when `expected_bytes` >= 0, exactly that many; then read it whole. `what` labels errors
/// ("manifest", "artifact file", ...). Returns the bytes. Throws Error (one line naming the path) otherwise.
std::string read_regular_file(const std::string& path, uint64_t max_bytes, const std::string& what,
                              int64_t expected_bytes = -1);

/// Where an artifact is, from the path a user gave: the artifact folder, or the model file in it. The rule of
/// vitedge/manifest.py artifact_folder + read_manifest, so C++ and Python accept the same paths:
/// - a directory (a symlink to one too) is the artifact folder;
/// - a regular file (symlinks followed; trailing "/" ignored, as Python's pathlib does) stands for the folder it
///   is in (its path's parent, not the symlink target's) when that folder holds manifest.json and the file is the
///   one the manifest's "artifact" names (check_artifact_file, once the manifest is parsed). manifest.json itself,
///   any other file of the folder, a file with no manifest.json beside it, or a model file nested deeper than the
///   folder are refused, naming the path as given.
struct ArtifactLocation {
  std::string dir;        // the artifact folder: `path` as given for a directory, else the file's parent ("." if none)
  std::string file;       // `path` as given when it is a file, else empty
  std::string file_name;  // the file's name (its last component) when `file` is set
};

/// Locate the artifact `path` designates (see ArtifactLocation). Throws Error (one line naming `path`): missing
/// path, neither directory nor regular file (FIFO, device, socket), manifest.json given, a file with no
/// manifest.json beside it.
ArtifactLocation locate_artifact(const std::string& path);

/// When `loc` came from a file: it must be the model file the parsed manifest `m` (read from `manifest_path`) names
/// in "artifact"; Error naming the file and the name the manifest holds otherwise. No-op for a directory.
void check_artifact_file(const ArtifactLocation& loc, const Manifest& m, const std::string& manifest_path);

/// `name` (relative, already checked by parse_manifest) inside `dir`: refuses it when it is a symlink (or has a
/// symlinked parent) that resolves outside `dir`, or when it is not a regular file. Returns dir/name.
std::string artifact_file_path(const std::string& dir, const std::string& name);

/// Check a zip archive held in memory (a TorchScript .pt or an AOTInductor .pt2) before libtorch reads it, with
/// the rules of vitedge/safety.py safe_zip_members: a readable central directory (zip64 understood); at most
/// 100000 members; each name relative, without a ".." component, NUL or backslash (nor a drive letter); no
/// duplicate names; no symlink member (Unix mode in the external attributes); no encrypted member; method stored
/// or deflate; total uncompressed size <= 16 GiB; a member of >= 1 MiB expanding at most 200-fold; every local
/// header where the directory says, naming the same member; member data not overlapping and not running into the
/// central directory. `origin` (the file's path) labels errors. Throws Error.
void check_zip_archive(const std::string& bytes, const std::string& origin);

/// Refuse an ONNX model (protobuf bytes) any of whose tensors (initializers, sparse initializers, node
/// attributes, subgraphs, functions) has external data (TensorProto.external_data or data_location EXTERNAL):
/// the runner hands ONNX Runtime the verified bytes of the .onnx file only, and external data would be read from
/// a path the verified bytes do not cover. Malformed protobuf: Error too. `origin` labels errors.
void check_onnx_no_external_data(const std::string& bytes, const std::string& origin);

/// An OpenVINO IR graph (model.xml) is refused above this size: 64 MiB (a ViT-B graph is a few hundred KiB; the
/// weights live in the .bin). Same limit as vitedge/targets/openvino.py MAX_XML_BYTES.
constexpr uint64_t kMaxOpenVinoXmlBytes = uint64_t{64} << 20;

/// Refuse bytes that are not an OpenVINO IR graph before OpenVINO reads them (its read_model would accept any format
/// a frontend reads: ONNX, TensorFlow, PaddlePaddle, ... and ONNX could name external data by path). Accepted: an
/// optional UTF-8 byte order mark, then only whitespace, one XML declaration (<?xml ...?>) and comments before the
/// root element, which must be <net>; no NUL byte anywhere, and no "<!DOCTYPE" or "<!ENTITY" anywhere (no
/// document type definition, no entity expansion). The same rule as vitedge/targets/openvino.py check_ir_xml.
/// `origin` (the file's path) labels the error. Throws Error.
void check_openvino_ir(const std::string& bytes, const std::string& origin);

/// The relative names ("a/b.bin") of every entry below `dir`, recursively, sorted; `model.sig` at the top level
/// is left out. Throws Error on a symlink or a non-regular, non-directory entry (FIFO, device, socket).
std::vector<std::string> list_artifact_tree(const std::string& dir);

/// Open `path` read-only (O_NONBLOCK, so a FIFO cannot block) and check with fstat that it is a regular file;
/// returns the descriptor (the caller closes it). Throws Error naming `what` and the path.
int open_regular_file(const std::string& path, const std::string& what);

/// Lower-case hex SHA-256 of a regular file (open_regular_file, then read in 1 MiB blocks). sha256.cpp.
std::string sha256_regular_file(const std::string& path);

}  // namespace vitedge
