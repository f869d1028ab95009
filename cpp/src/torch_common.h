// Internal helpers shared by the libtorch-based backends (TorchScript, AOTInductor). Includes torch headers:
// only the backend translation units include it.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>

#include <string>
#include <vector>

#include "backend.h"

namespace vitedge::torch_common {

// One line from a libtorch message. Errors raised inside the TorchScript interpreter carry a multi-line
// traceback whose last line is the actual error ("RuntimeError: shape '[...]' is invalid ..."); others
// put the message first and a C++ backtrace after it.
inline std::string first_line(const char* what) {
  std::string s = what ? what : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (s.rfind("The following operation failed in the TorchScript interpreter", 0) == 0) {
    const auto nl = s.rfind('\n');
    if (nl != std::string::npos) return s.substr(nl + 1);
  }
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

// Options::device ("cpu", "cuda", "cuda:N", already syntax-checked by Runner::open) as a torch device.
// Throws Error when CUDA is asked for and this libtorch has no CUDA or sees no GPU.
inline c10::Device torch_device(const Options& options) {
  const c10::Device device(options.device);
  if (device.is_cuda()) {
    if (!torch::cuda::is_available())
      throw Error("device '" + options.device + "' requested, but this libtorch " +
                  (at::hasCUDA() ? "sees no CUDA GPU" : "was built without CUDA (CPU-only torch)") +
                  "; use device cpu");
    const auto n = static_cast<int64_t>(torch::cuda::device_count());
    if (device.has_index() && device.index() >= n)
      throw Error("device '" + options.device + "' requested, but only " + std::to_string(n) + " CUDA device(s) are visible");
  }
  return device;
}

inline void set_threads(const Options& options) {
  if (options.threads > 0) at::set_num_threads(options.threads);
}

// The runner's checked float32 input as a tensor on `device`, without a copy on CPU. The buffer is only read:
// exported inference graphs do not modify their input in place.
inline at::Tensor input_tensor(const Tensor& input, const c10::Device& device) {
  at::Tensor x = at::from_blob(const_cast<float*>(input.data.data()), input.shape, at::TensorOptions().dtype(at::kFloat));
  return device.is_cpu() ? x : x.to(device);
}

// libtorch outputs -> float32 CPU row-major vitedge tensors (names are set by the Runner).
inline std::vector<Tensor> to_outputs(const std::vector<at::Tensor>& tensors) {
  std::vector<Tensor> outputs;
  outputs.reserve(tensors.size());
  for (const at::Tensor& t0 : tensors) {
    at::Tensor t = t0.to(at::kCPU, at::kFloat).contiguous();
    Tensor o;
    o.shape.assign(t.sizes().begin(), t.sizes().end());
    o.data.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
    outputs.push_back(std::move(o));
  }
  return outputs;
}

}  // namespace vitedge::torch_common
