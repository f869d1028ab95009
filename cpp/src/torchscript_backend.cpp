// TorchScript backend (libtorch): torch::jit::load + Module::forward.
// Thread safety: Module::forward may be called from several threads at once (the TorchScript interpreter
// keeps per-call state; the module's frozen weights are only read).
#include <torch/script.h>

#include <chrono>
#include <sstream>

#include "backend.h"
#include "torch_common.h"

namespace vitedge {
namespace {

using torch_common::first_line;

void collect(const c10::IValue& v, std::vector<at::Tensor>& out) {
  if (v.isTensor()) {
    out.push_back(v.toTensor());
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) collect(e, out);
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) collect(e, out);
  } else if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict()) collect(kv.value(), out);
  } else {
    throw Error("model returned an unsupported value of type " + v.tagKind() + " (expected tensors)");
  }
}

class TorchScriptBackend final : public Backend {
 public:
  TorchScriptBackend(ModelSource& source, const Options& options)
      : path_(source.path), device_(torch_common::torch_device(options)) {
    const std::string& path = path_;
    try {
      torch_common::set_threads(options);
      // From the verified bytes (never re-opened by path: a file swapped after the check is not loaded).
      std::istringstream in(std::move(source.bytes));
      module_ = torch::jit::load(in, device_);
      module_.eval();
    } catch (const c10::Error& e) {
      throw Error("cannot load TorchScript model " + path + ": " + first_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw Error("cannot load TorchScript model " + path + ": " + first_line(e.what()));
    }
  }

  std::string runtime() const override { return "libtorch"; }

  std::vector<Tensor> run(const Tensor& input) override {
    try {
      c10::InferenceMode guard;
      c10::IValue result = module_.forward({torch_common::input_tensor(input, device_)});
      std::vector<at::Tensor> tensors;
      collect(result, tensors);
      return torch_common::to_outputs(tensors);
    } catch (const c10::Error& e) {
      throw Error("libtorch failed running " + path_ + ": " + first_line(e.what_without_backtrace()));
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error("libtorch failed running " + path_ + ": " + first_line(e.what()));
    }
  }

  std::vector<double> time_native(const Tensor& input, int warmup, int iters) override {
    try {
      c10::InferenceMode guard;
      std::vector<c10::IValue> args{torch_common::input_tensor(input, device_)};
      for (int i = 0; i < warmup; ++i) module_.forward(args);
      std::vector<double> ms;
      ms.reserve(iters);
      for (int i = 0; i < iters; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        c10::IValue out = module_.forward(args);
        if (device_.is_cuda()) torch::cuda::synchronize();
        const auto t1 = std::chrono::steady_clock::now();
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
      return ms;
    } catch (const c10::Error& e) {
      throw Error("libtorch failed running " + path_ + ": " + first_line(e.what_without_backtrace()));
    }
  }

 private:
  std::string path_;
  c10::Device device_;
  torch::jit::Module module_;
};

}  // namespace

std::unique_ptr<Backend> make_torchscript_backend(const Manifest& /*manifest*/, ModelSource& source,
                                                  const Options& options) {
  return std::make_unique<TorchScriptBackend>(source, options);
}

}  // namespace vitedge
