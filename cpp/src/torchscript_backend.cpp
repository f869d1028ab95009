// TorchScript backend (libtorch). The only translation unit that includes torch headers.
#include <torch/script.h>

#include <ATen/Parallel.h>

#include "backend.h"

namespace vitedge {
namespace {

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

// One line from a libtorch message. Errors raised inside the TorchScript interpreter carry a multi-line
// traceback whose last line is the actual error ("RuntimeError: shape '[...]' is invalid ..."); others
// put the message first and a C++ backtrace after it.
std::string first_line(const char* what) {
  std::string s = what;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (s.rfind("The following operation failed in the TorchScript interpreter", 0) == 0) {
    const auto nl = s.rfind('\n');
    if (nl != std::string::npos) return s.substr(nl + 1);
  }
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

class TorchScriptBackend final : public Backend {
 public:
  TorchScriptBackend(const std::string& path, const Options& options) : path_(path) {
    try {
      if (options.threads > 0) at::set_num_threads(options.threads);
      module_ = torch::jit::load(path, torch::kCPU);
      module_.eval();
    } catch (const c10::Error& e) {
      throw Error("cannot load TorchScript model " + path + ": " + first_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw Error("cannot load TorchScript model " + path + ": " + first_line(e.what()));
    }
  }

  std::vector<Tensor> run(const Tensor& input) override {
    try {
      c10::InferenceMode guard;
      // The buffer is only read: exported inference graphs do not modify their input in place.
      at::Tensor x = torch::from_blob(const_cast<float*>(input.data.data()), input.shape,
                                      torch::TensorOptions().dtype(torch::kFloat32));
      c10::IValue result = module_.forward({x});
      std::vector<at::Tensor> tensors;
      collect(result, tensors);
      std::vector<Tensor> outputs;
      outputs.reserve(tensors.size());
      for (const at::Tensor& t0 : tensors) {
        at::Tensor t = t0.to(torch::kCPU, torch::kFloat32).contiguous();
        Tensor o;
        o.shape.assign(t.sizes().begin(), t.sizes().end());
        o.data.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
        outputs.push_back(std::move(o));
      }
      return outputs;
    } catch (const c10::Error& e) {
      throw Error("libtorch failed running " + path_ + ": " + first_line(e.what_without_backtrace()));
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error("libtorch failed running " + path_ + ": " + first_line(e.what()));
    }
  }

 private:
  std::string path_;
  torch::jit::Module module_;
};

}  // namespace

std::unique_ptr<Backend> make_torchscript_backend(const std::string& model_path, const Options& options) {
  return std::make_unique<TorchScriptBackend>(model_path, options);
}

}  // namespace vitedge
