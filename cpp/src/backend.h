// Internal: the interface each runtime backend implements. Not installed, not part of the public API.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "vitedge/runner.h"

namespace vitedge {

class Backend {
 public:
  virtual ~Backend() = default;
  /// `input` has already been checked against the manifest. Must throw only vitedge::Error.
  /// Called concurrently from several threads on one Runner: must be thread-safe (serialize if needed).
  virtual std::vector<Tensor> run(const Tensor& input) = 0;
  /// Runtime name for the bench JSON ("libtorch", "aotinductor", ...); empty: the manifest's backend.
  virtual std::string runtime() const { return ""; }
  /// The bare backend loop for the runner-overhead benchmark (vitedge-bench --bare): `warmup` untimed then
  /// `iters` timed calls of the runtime's own run function on a prepared input, milliseconds per call,
  /// without the Runner's checks or copies. Throws Error when a backend does not provide one.
  virtual std::vector<double> time_native(const Tensor& /*input*/, int /*warmup*/, int /*iters*/) {
    throw Error("this backend has no bare benchmark loop (vitedge-bench --bare)");
  }
};

/// What a backend loads besides the manifest: the main file's bytes, read once by Runner::open and checked there
/// (size, SHA-256 against the manifest when Options::verify, against model.sig when trusted keys are given, zip
/// layout for TorchScript/AOTInductor). A backend must load `bytes` and never re-open `path` (a file swapped on
/// disk after the check must not be loaded); it may move `bytes` out to keep them alive.
struct ModelSource {
  std::string dir;            // the artifact directory
  std::string path;           // dir/manifest.artifact: labels messages only
  std::string bytes;          // the verified content of the main file
  /// Further files the backend loads (OpenVINO: the IR weights), as (name relative to dir, verified content): read
  /// once by Runner::open and checked like the main file (size, SHA-256, signature). Never re-open them by path.
  std::vector<std::pair<std::string, std::string>> files;
};

/// A backend constructor: the manifest Runner::open parsed and checked (from the same manifest.json bytes it hashed
/// and, with trusted keys, checked against model.sig; valid for the constructor's duration only: copy what is kept),
/// the verified model bytes, and the runner options. A backend never reads manifest.json (nor any artifact file) by
/// itself: everything it needs is in these arguments. Throws vitedge::Error.
/// Changing this signature, ModelSource, Manifest or Options changes the plugin interface: bump kPluginInterface
/// (plugin.h), so that a plugin of an older build is refused by its ABI key.
using BackendFactory = std::unique_ptr<Backend> (*)(const Manifest& manifest, ModelSource& source,
                                                    const Options& options);

/// Test hook (nullptr in normal use): called by Runner::open after the main file's bytes were read and checked
/// and before the backend loads them, with the path of the file on disk. The race test swaps the file there to
/// show that the backend loads the checked bytes, not what the path holds by then.
extern void (*after_verify_hook_for_tests)(const std::string& model_path);

/// The bare loop of an open runner's backend (runner.cpp; for vitedge-bench --bare only).
std::vector<double> time_backend_loop(Runner& runner, const Tensor& input, int warmup, int iters);

/// TorchScript via libtorch (torchscript_backend.cpp). Loads torch::jit::load from an istream over `source.bytes`.
std::unique_ptr<Backend> make_torchscript_backend(const Manifest& manifest, ModelSource& source,
                                                  const Options& options);

/// AOTInductor .pt2 package via libtorch's AOTIModelPackageLoader (aotinductor_backend.cpp): the verified bytes are
/// written to a private 0700 temporary directory, loaded from there, and the directory is removed on failure and
/// in the destructor.
std::unique_ptr<Backend> make_aotinductor_backend(const Manifest& manifest, ModelSource& source,
                                                  const Options& options);

/// ONNX Runtime (onnxruntime_backend.cpp): its C API, from the shared library found as Options and
/// VITEDGE_ONNXRUNTIME_LIB say and opened with dlopen, checked against its version before use. The session is
/// created from `source.bytes` (CreateSessionFromArray; external data is refused); the manifest supplies the
/// allow-listed session config.
/// Compiled when VITEDGE_WITH_ONNXRUNTIME (CMake option, ON by default).
std::unique_ptr<Backend> make_onnxruntime_backend(const Manifest& manifest, ModelSource& source,
                                                  const Options& options);

/// TensorRT (tensorrt_backend.cpp; compiled when CMake finds NvInfer.h, libnvinfer and the CUDA toolkit:
/// VITEDGE_WITH_TENSORRT). `source.bytes` is the artifact's serialized engine (model.engine); an artifact exported
/// without TensorRT names model.onnx instead and is refused with how to build its engine.
std::unique_ptr<Backend> make_tensorrt_backend(const Manifest& manifest, ModelSource& source,
                                                  const Options& options);

/// ExecuTorch (executorch_backend.cpp; compiled when CMake finds the executorch wheel's CMake config:
/// VITEDGE_WITH_EXECUTORCH). `source.bytes` is the artifact's .pte program (XNNPACK-delegated; loaded through a BufferDataLoader); options.threads
/// resizes ExecuTorch's process-wide thread pool, which XNNPACK runs on. CPU only.
std::unique_ptr<Backend> make_executorch_backend(const Manifest& manifest, ModelSource& source,
                                                  const Options& options);

/// OpenVINO (openvino_backend.cpp; compiled when CMake finds OpenVINO's CMake config, the openvino wheel's by
/// default: VITEDGE_WITH_OPENVINO). `source.bytes` is the IR graph (model.xml, checked by check_openvino_ir) and
/// `source.files[0]` its weights (model.bin); read with Core::read_model(xml, weights tensor), never from a path.
/// Compiled for the CPU with the manifest's allow-listed config (else the precision's default), NUM_STREAMS 1 and
/// INFERENCE_NUM_THREADS = options.threads (when > 0), for the exact input shape of each batch size met (up to 4,
/// then one dynamic-batch compile), each with a pool of infer requests (run() is thread-safe).
std::unique_ptr<Backend> make_openvino_backend(const Manifest& manifest, ModelSource& source,
                                                  const Options& options);

}  // namespace vitedge
