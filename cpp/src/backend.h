// Internal: the interface each runtime backend implements. Not installed, not part of the public API.
#pragma once

#include <memory>
#include <string>
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

/// A backend constructor: the artifact's main file and the runner options. Throws vitedge::Error.
using BackendFactory = std::unique_ptr<Backend> (*)(const std::string& model_path, const Options& options);

/// The bare loop of an open runner's backend (runner.cpp; for vitedge-bench --bare only).
std::vector<double> time_backend_loop(Runner& runner, const Tensor& input, int warmup, int iters);

/// TorchScript via libtorch (torchscript_backend.cpp). `model_path` is the artifact's main file.
std::unique_ptr<Backend> make_torchscript_backend(const std::string& model_path, const Options& options);

/// AOTInductor .pt2 package via libtorch's AOTIModelPackageLoader (aotinductor_backend.cpp).
std::unique_ptr<Backend> make_aotinductor_backend(const std::string& model_path, const Options& options);

/// ONNX Runtime (onnxruntime_backend.cpp): its C API, from the shared library found as Options and
/// VITEDGE_ONNXRUNTIME_LIB say and opened with dlopen, checked against its version before use. `model_path` is
/// the artifact's .onnx file; its manifest.json (same directory) supplies quantization.session_config.
/// Compiled when VITEDGE_WITH_ONNXRUNTIME (CMake option, ON by default).
std::unique_ptr<Backend> make_onnxruntime_backend(const std::string& model_path, const Options& options);

/// TensorRT (tensorrt_backend.cpp; compiled when CMake finds NvInfer.h, libnvinfer and the CUDA toolkit:
/// VITEDGE_WITH_TENSORRT). `model_path` is the artifact's serialized engine (model.engine); an artifact exported
/// without TensorRT names model.onnx instead and is refused with how to build its engine.
std::unique_ptr<Backend> make_tensorrt_backend(const std::string& model_path, const Options& options);

/// ExecuTorch (executorch_backend.cpp; compiled when CMake finds the executorch wheel's CMake config:
/// VITEDGE_WITH_EXECUTORCH). `model_path` is the artifact's .pte program (XNNPACK-delegated); options.threads
/// resizes ExecuTorch's process-wide thread pool, which XNNPACK runs on. CPU only.
std::unique_ptr<Backend> make_executorch_backend(const std::string& model_path, const Options& options);

}  // namespace vitedge
