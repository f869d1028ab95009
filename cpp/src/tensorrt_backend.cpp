// TensorRT backend: runs the serialized engine of a `vitedge export --target trt` artifact (manifest "artifact":
// "model.engine") with TensorRT's C++ runtime API (NvInfer.h, TensorRT >= 10) and the CUDA runtime.
//
//   nvinfer1::createInferRuntime(logger) -> IRuntime::deserializeCudaEngine -> ICudaEngine::createExecutionContext
//   per run: setInputShape (dynamic batch within the engine's optimization profile 0), setTensorAddress for every
//   I/O tensor, cudaMemcpyAsync host->device, enqueueV3 on a CUDA stream, cudaMemcpyAsync device->host,
//   cudaStreamSynchronize.
//
// Compiled only when CMake finds NvInfer.h, libnvinfer and the CUDA toolkit (VITEDGE_WITH_TENSORRT). The engine
// is specific to the TensorRT version and GPU it was built for; deserialization failures say so.
// Thread safety: one execution context, so run() calls are serialized with a mutex.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"

namespace vitedge {
namespace {

// TensorRT reports through an ILogger; keep the last error for our exception messages, print warnings.
class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kERROR) {
      std::lock_guard<std::mutex> lock(mutex_);
      last_error_ = msg ? msg : "";
    }
    if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg ? msg : "");
  }
  std::string last_error() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_error_.empty() ? "no message from TensorRT" : last_error_;
  }

 private:
  mutable std::mutex mutex_;
  std::string last_error_;
};

void cuda_check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw Error(std::string("CUDA ") + what + " failed: " + cudaGetErrorString(rc));
}

std::string dims_str(const nvinfer1::Dims& d) {
  std::string s = "(";
  for (int i = 0; i < d.nbDims; ++i) s += (i ? ", " : "") + std::to_string(d.d[i]);
  return s + ")";
}

int64_t volume(const nvinfer1::Dims& d) {
  int64_t n = 1;
  for (int i = 0; i < d.nbDims; ++i) n *= d.d[i];
  return n;
}

// A device buffer that grows to the largest size asked for.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t capacity = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), capacity(o.capacity) { o.ptr = nullptr, o.capacity = 0; }
  void reserve(size_t bytes) {
    if (bytes <= capacity) return;
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    capacity = 0;
    cuda_check(cudaMalloc(&ptr, bytes), "cudaMalloc");
    capacity = bytes;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};

int device_index(const Options& options) {
  // TensorRT engines always run on a CUDA device: "cuda:N" picks it; "cpu" (the Options default) and "cuda"
  // mean device 0.
  if (options.device.rfind("cuda:", 0) == 0) return std::stoi(options.device.substr(5));
  return 0;
}

class TensorRTBackend final : public Backend {
 public:
  TensorRTBackend(const Manifest& manifest, ModelSource& source, const Options& options) : path_(source.path) {
    const std::string& path = path_;
    if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".onnx") == 0)
      throw Error("this TensorRT artifact holds no engine (TensorRT or a GPU was missing at export; see its "
                  "manifest's tensorrt.engine_missing): build model.engine with the artifact's trtexec.sh, or re-run "
                  "vitedge export --target trt on the machine that will run it");
    const int32_t lib = getInferLibVersion();
    if (lib / 10000 != NV_TENSORRT_VERSION / 10000)
      throw Error("libnvinfer version " + std::to_string(lib) + " does not match the NvInfer.h this runner was built "
                  "with (" + std::to_string(NV_TENSORRT_VERSION) + ")");
    device_ = device_index(options);
    int count = 0;
    cuda_check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (device_ < 0 || device_ >= count)
      throw Error("CUDA device " + std::to_string(device_) + " requested, " + std::to_string(count) + " present");
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");

    // The verified bytes (never re-opened by path: a file swapped after the check is not loaded).
    const std::string& blob = source.bytes;
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw Error("nvinfer1::createInferRuntime failed: " + logger_.last_error());
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_)
      throw Error("TensorRT cannot deserialize " + path + " (built with another TensorRT version or for another GPU? "
                  "rebuild it with the artifact's trtexec.sh): " + logger_.last_error());
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw Error("TensorRT createExecutionContext failed: " + logger_.last_error());

    for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
        throw Error(std::string("engine tensor '") + name + "' is not float32; vitedge engines have float32 I/O");
      if (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT) inputs_.emplace_back(name);
      else outputs_.emplace_back(name);
    }
    if (inputs_.size() != 1)
      throw Error(path + " has " + std::to_string(inputs_.size()) + " inputs; vitedge engines have one");
    // Outputs in the manifest's order (Runner names them by position).
    const Manifest& m = manifest;
    std::vector<std::string> ordered;
    for (const TensorSpec& spec : m.outputs) {
      const auto it = std::find(outputs_.begin(), outputs_.end(), spec.name);
      if (it == outputs_.end()) throw Error("engine " + path + " has no output named '" + spec.name + "'");
      ordered.push_back(*it);
    }
    for (const std::string& name : outputs_)
      if (std::find(ordered.begin(), ordered.end(), name) == ordered.end()) ordered.push_back(name);
    outputs_ = std::move(ordered);
    const nvinfer1::Dims shape = engine_->getTensorShape(inputs_[0].c_str());
    if (shape.nbDims >= 1 && shape.d[0] == -1) {
      min_batch_ = engine_->getProfileShape(inputs_[0].c_str(), 0, nvinfer1::OptProfileSelector::kMIN).d[0];
      max_batch_ = engine_->getProfileShape(inputs_[0].c_str(), 0, nvinfer1::OptProfileSelector::kMAX).d[0];
    } else {
      min_batch_ = max_batch_ = shape.nbDims >= 1 ? shape.d[0] : 1;
    }
    out_buffers_.resize(outputs_.size());
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }

  ~TensorRTBackend() override {
    context_.reset();  // before the engine and runtime (TensorRT 10: plain delete through unique_ptr)
    engine_.reset();
    runtime_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string runtime() const override {
    const int32_t v = getInferLibVersion();
    return "tensorrt-" + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
           std::to_string(v % 100) + " (cuda:" + std::to_string(device_) + ")";
  }

  std::vector<Tensor> run(const Tensor& input) override {
    std::lock_guard<std::mutex> lock(mutex_);
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    bind(input);
    cuda_check(cudaMemcpyAsync(in_buffer_.ptr, input.data.data(), input.data.size() * sizeof(float),
                               cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync (input)");
    if (!context_->enqueueV3(stream_)) throw Error("TensorRT enqueueV3 failed: " + logger_.last_error());
    std::vector<Tensor> out(outputs_.size());
    for (size_t i = 0; i < outputs_.size(); ++i) {
      const nvinfer1::Dims d = context_->getTensorShape(outputs_[i].c_str());
      out[i].shape.assign(d.d, d.d + d.nbDims);
      out[i].data.resize(static_cast<size_t>(volume(d)));
      cuda_check(cudaMemcpyAsync(out[i].data.data(), out_buffers_[i].ptr, out[i].data.size() * sizeof(float),
                                 cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (output)");
    }
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    return out;
  }

  // Bare loop: the input stays on the device; each timed call is enqueueV3 + stream synchronize.
  std::vector<double> time_native(const Tensor& input, int warmup, int iters) override {
    std::lock_guard<std::mutex> lock(mutex_);
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    bind(input);
    cuda_check(cudaMemcpyAsync(in_buffer_.ptr, input.data.data(), input.data.size() * sizeof(float),
                               cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync (input)");
    for (int i = 0; i < warmup; ++i)
      if (!context_->enqueueV3(stream_)) throw Error("TensorRT enqueueV3 failed: " + logger_.last_error());
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    std::vector<double> ms;
    ms.reserve(static_cast<size_t>(iters));
    for (int i = 0; i < iters; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      if (!context_->enqueueV3(stream_)) throw Error("TensorRT enqueueV3 failed: " + logger_.last_error());
      cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return ms;
  }

 private:
  // Set the input shape (checking the optimization profile), size the device buffers, set every tensor address.
  void bind(const Tensor& input) {
    const int64_t batch = input.shape.empty() ? 0 : input.shape[0];
    if (batch < min_batch_ || batch > max_batch_)
      throw Error("batch " + std::to_string(batch) + " is outside this engine's optimization profile (" +
                  std::to_string(min_batch_) + ".." + std::to_string(max_batch_) +
                  "); re-export with --batch MIN:OPT:MAX covering it");
    nvinfer1::Dims dims{};
    dims.nbDims = static_cast<int32_t>(input.shape.size());
    for (int i = 0; i < dims.nbDims; ++i) dims.d[i] = input.shape[i];
    if (!context_->setInputShape(inputs_[0].c_str(), dims))
      throw Error("TensorRT rejected input shape " + dims_str(dims) + ": " + logger_.last_error());
    in_buffer_.reserve(input.data.size() * sizeof(float));
    context_->setTensorAddress(inputs_[0].c_str(), in_buffer_.ptr);
    for (size_t i = 0; i < outputs_.size(); ++i) {
      const nvinfer1::Dims d = context_->getTensorShape(outputs_[i].c_str());
      if (volume(d) < 0) throw Error("TensorRT could not infer the shape of output '" + outputs_[i] + "'");
      out_buffers_[i].reserve(static_cast<size_t>(volume(d)) * sizeof(float));
      context_->setTensorAddress(outputs_[i].c_str(), out_buffers_[i].ptr);
    }
  }

  std::string path_;
  int device_ = 0;
  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  std::vector<std::string> inputs_, outputs_;  // outputs in the manifest's order
  int64_t min_batch_ = 1, max_batch_ = 1;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer in_buffer_;
  std::vector<DeviceBuffer> out_buffers_;
  std::mutex mutex_;
};

}  // namespace

std::unique_ptr<Backend> make_tensorrt_backend(const Manifest& manifest, ModelSource& source,
                                                  const Options& options) {
  return std::make_unique<TensorRTBackend>(manifest, source, options);
}

}  // namespace vitedge
