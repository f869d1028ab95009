// ExecuTorch backend: runs an XNNPACK-delegated .pte program through the ExecuTorch runtime's Module API
// (executorch/extension/module/module.h), linked against the libraries the executorch wheel ships
// (libexecutorch, the optimized and quantized CPU kernels, the XNNPACK delegate, the thread pool), found
// through the wheel's CMake config (cpp/CMakeLists.txt, VITEDGE_WITH_EXECUTORCH).
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <executorch/extension/data_loader/buffer_data_loader.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/core/error.h>

#include "backend.h"

// The wheel ships libexecutorch_threadpool.so but not its header (extension/threadpool/threadpool.h). These
// two declarations name the library's exported C++ symbols (ExecuTorch's process-wide thread pool, which the
// XNNPACK delegate runs on); only member functions are called through a pointer the library returns, so no
// layout of the class is assumed.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace vitedge {
namespace {

namespace et = ::executorch;
using et::extension::module::Module;

std::string error_name(et::runtime::Error e) {
  return "ExecuTorch error 0x" + [] (unsigned v) {
    const char* hex = "0123456789abcdef";
    std::string s;
    do { s.insert(s.begin(), hex[v % 16]); v /= 16; } while (v);
    return s;
  }(static_cast<unsigned>(e));
}

class ExecuTorchBackend : public Backend {
 public:
  ExecuTorchBackend(ModelSource& source, const Options& options) {
    const std::string& path = source.path;
    if (options.device != "cpu")
      throw Error("the ExecuTorch backend runs on the CPU (XNNPACK); device '" + options.device + "' is not supported");
    if (options.threads > 0) {
      auto* pool = et::extension::threadpool::get_threadpool();
      if (pool && pool->get_thread_count() != static_cast<size_t>(options.threads))
        pool->_unsafe_reset_threadpool(static_cast<uint32_t>(options.threads));
    }
    // From the verified bytes, copied once into a 64-byte-aligned buffer that lives as long as the Module
    // (the program's segments are used in place): a file swapped after the check is never read.
    buffer_size_ = source.bytes.size();
    buffer_.reset(static_cast<unsigned char*>(std::aligned_alloc(64, (buffer_size_ + 63) / 64 * 64 + 64)));
    if (!buffer_) throw Error("cannot allocate " + std::to_string(buffer_size_) + " bytes for ExecuTorch program " + path);
    std::memcpy(buffer_.get(), source.bytes.data(), buffer_size_);
    module_ = std::make_unique<Module>(
        std::make_unique<et::extension::BufferDataLoader>(buffer_.get(), buffer_size_));
    auto err = module_->load(et::runtime::Program::Verification::InternalConsistency);
    if (err != et::runtime::Error::Ok)
      throw Error("cannot load ExecuTorch program " + path + ": " + error_name(err) +
                  " (not a valid .pte, or built for operators/delegates this runtime lacks)");
    err = module_->load_method("forward");
    if (err != et::runtime::Error::Ok)
      throw Error("cannot load method 'forward' of ExecuTorch program " + path + ": " + error_name(err));
  }

  std::vector<Tensor> run(const Tensor& input) override {
    std::lock_guard<std::mutex> lock(mutex_);  // one Method, its planned buffers are reused per call
    std::vector<et::aten::SizesType> sizes(input.shape.begin(), input.shape.end());
    // The runtime takes a non-const pointer but does not write inputs.
    auto tensor = et::extension::from_blob(const_cast<float*>(input.data.data()), sizes,
                                           et::aten::ScalarType::Float);
    auto result = module_->forward(tensor);
    if (!result.ok())
      throw Error("ExecuTorch execution failed: " + error_name(result.error()) +
                  " (input shape outside the program's bounds?)");
    std::vector<Tensor> outs;
    for (const auto& v : *result) {
      if (!v.isTensor()) throw Error("ExecuTorch program returned a non-tensor output");
      const auto& t = v.toTensor();
      if (t.scalar_type() != et::aten::ScalarType::Float)
        throw Error("ExecuTorch program returned a non-float32 output");
      Tensor o;
      o.shape.assign(t.sizes().begin(), t.sizes().end());
      const float* p = t.const_data_ptr<float>();
      o.data.assign(p, p + t.numel());
      outs.push_back(std::move(o));
    }
    return outs;
  }

  std::string runtime() const override { return "executorch"; }

  std::vector<double> time_native(const Tensor& input, int warmup, int iters) override {
    std::vector<et::aten::SizesType> sizes(input.shape.begin(), input.shape.end());
    auto tensor = et::extension::from_blob(const_cast<float*>(input.data.data()), sizes,
                                           et::aten::ScalarType::Float);
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<double> ms;
    for (int i = 0; i < warmup + iters; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      auto r = module_->forward(tensor);
      auto t1 = std::chrono::steady_clock::now();
      if (!r.ok()) throw Error("ExecuTorch execution failed: " + error_name(r.error()));
      if (i >= warmup) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    return ms;
  }

 private:
  struct Free {
    void operator()(unsigned char* p) const { std::free(p); }
  };
  std::unique_ptr<unsigned char[], Free> buffer_;  // declared before module_: freed after it
  size_t buffer_size_ = 0;
  std::unique_ptr<Module> module_;
  std::mutex mutex_;
};

}  // namespace

std::unique_ptr<Backend> make_executorch_backend(const Manifest& /*manifest*/, ModelSource& source,
                                                  const Options& options) {
  return std::make_unique<ExecuTorchBackend>(source, options);
}

}  // namespace vitedge
