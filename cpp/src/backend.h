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
  virtual std::vector<Tensor> run(const Tensor& input) = 0;
};

/// TorchScript via libtorch (torchscript_backend.cpp). `model_path` is the artifact's main file.
std::unique_ptr<Backend> make_torchscript_backend(const std::string& model_path, const Options& options);

/// TensorRT (tensorrt_backend.cpp; compiled when CMake finds NvInfer.h, libnvinfer and the CUDA toolkit:
/// VITEDGE_WITH_TENSORRT). `model_path` is the artifact's serialized engine (model.engine); an artifact exported
/// without TensorRT names model.onnx instead and is refused with how to build its engine.
std::unique_ptr<Backend> make_tensorrt_backend(const std::string& model_path, const Options& options);

}  // namespace vitedge
