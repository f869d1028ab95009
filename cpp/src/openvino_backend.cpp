// OpenVINO backend: runs an OpenVINO IR (model.xml graph + model.bin weights) on OpenVINO's CPU plugin through its C++
// runtime (openvino::runtime), found through the CMake config the openvino wheel ships (cpp/cmake/openvino.cmake,
// VITEDGE_WITH_OPENVINO).
//
// Loading: from the verified bytes only. Runner::open has read model.xml (at most 64 MiB; checked to be IR XML with a
// <net> root and no DOCTYPE/ENTITY, so no other frontend's format reaches OpenVINO) and the weights file the manifest
// names, and checked both against the manifest's SHA-256 (and the signature when keys are given). Here the graph is
// read with Core::read_model(xml string, weights tensor); the tensor points into the weights bytes this backend keeps
// alive as long as the model (the IR frontend may use them in place). No path is ever opened.
//
// Compilation mirrors vitedge/targets/openvino.py OpenVINORunner so that C++ and Python run the same kernels:
// the manifest's allow-listed openvino.config (else the precision's default: PERFORMANCE_HINT LATENCY with
// INFERENCE_PRECISION_HINT f32, bf16 for a bf16 artifact), NUM_STREAMS 1, INFERENCE_NUM_THREADS = Options::threads
// (when > 0; 0 keeps OpenVINO's default). An IR with one (dynamic batch, C, H, W) input is compiled reshaped to the
// exact batch of each call (static shapes: a fixed memory plan and kernels), for up to kMaxStaticBatches batch sizes;
// further sizes share one compile of the dynamic-batch IR. Each compiled model keeps a pool of infer requests, so
// concurrent run() calls on one Runner each get their own request (thread-safe; compiles are serialized).
#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <openvino/openvino.hpp>

#include "backend.h"

namespace vitedge {
namespace {

constexpr size_t kMaxStaticBatches = 4;  // as MAX_STATIC_BATCHES in vitedge/targets/openvino.py

// The first informative line of an OpenVINO message (it starts with "Exception from src/...cpp:NN:" lines), at most
// 300 characters: the rule of vitedge.errors.first_line.
std::string first_line(const std::string& what) {
  static const std::regex location(R"(Exception from \S+:\d+:?)");
  std::istringstream in(what);
  std::string line;
  while (std::getline(in, line)) {
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) continue;
    const auto e = line.find_last_not_of(" \t\r");
    line = line.substr(b, e - b + 1);
    if (std::regex_match(line, location)) continue;
    return line.substr(0, 300);
  }
  return "unknown OpenVINO error";
}

std::string shape_text(const ov::PartialShape& s) { return s.to_string(); }

class OpenVINOBackend : public Backend {
 public:
  OpenVINOBackend(const Manifest& manifest, ModelSource& source, const Options& options) : path_(source.path) {
    if (options.device != "cpu")
      throw Error("the OpenVINO backend runs on the CPU; device '" + options.device + "' is not supported");
    if (source.files.empty())
      throw Error("OpenVINO IR " + path_ + ": the runner handed over no weights file");
    const Manifest& m = manifest;
    // The compile config: the manifest's (allow-listed by parse_manifest) or the precision's default.
    std::vector<std::pair<std::string, std::string>> config;
    if (m.openvino_config) config = *m.openvino_config;
    else config = {{"PERFORMANCE_HINT", "LATENCY"}, {"INFERENCE_PRECISION_HINT", m.precision == "bf16" ? "bf16" : "f32"}};
    for (const auto& [k, v] : config) config_[k] = v;
    if (options.threads > 0) config_[ov::inference_num_threads.name()] = static_cast<int32_t>(options.threads);
    config_[ov::num_streams.name()] = ov::streams::Num(1);
    for (const auto& o : m.outputs) output_names_.push_back(o.name);

    weights_ = std::move(source.files.front().second);  // kept alive: the model may use these bytes in place
    try {
      const ov::Tensor weights(ov::element::u8, ov::Shape{weights_.size()},
                               weights_.empty() ? static_cast<void*>(&empty_) : static_cast<void*>(weights_.data()));
      model_ = core_.read_model(source.bytes, weights);
    } catch (const std::exception& e) {
      throw Error("cannot load OpenVINO IR " + path_ + ": " + first_line(e.what()));
    }
    if (model_->inputs().size() != 1)
      throw Error("OpenVINO IR " + path_ + " has " + std::to_string(model_->inputs().size()) +
                  " inputs; this runner feeds one image tensor");
    if (model_->input().get_element_type() != ov::element::f32)
      throw Error("OpenVINO IR " + path_ + " takes " + model_->input().get_element_type().get_type_name() +
                  " input; this runner feeds float32");
    ir_shape_ = model_->input().get_partial_shape();
    static_ = ir_shape_.rank().is_static() && ir_shape_.rank().get_length() == 4 && ir_shape_[0].is_dynamic();
    for (int64_t i = 1; static_ && i < 4; ++i) static_ = ir_shape_[i].is_static();
    std::lock_guard<std::mutex> lock(mutex_);
    compiled_for(static_ ? 1 : -1);  // as the Python runner: batch 1 (or the IR's shapes) compiled at open
  }

  std::vector<Tensor> run(const Tensor& input) override {
    Lease lease(*this, input.shape);
    set_input(lease.request, input);
    try {
      lease.request.infer();
    } catch (const std::exception& e) {
      throw Error("OpenVINO inference failed: " + first_line(e.what()));
    }
    return read_outputs(*lease.entry, lease.request);
  }

  std::string runtime() const override { return "openvino"; }

  std::vector<double> time_native(const Tensor& input, int warmup, int iters) override {
    Lease lease(*this, input.shape);
    set_input(lease.request, input);
    std::vector<double> ms;
    for (int i = 0; i < warmup + iters; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      try {
        lease.request.infer();
      } catch (const std::exception& e) {
        throw Error("OpenVINO inference failed: " + first_line(e.what()));
      }
      const auto t1 = std::chrono::steady_clock::now();
      if (i >= warmup) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    return ms;
  }

 private:
  // One compiled model and the infer requests not in use (created on demand, returned after each call).
  struct Entry {
    ov::CompiledModel compiled;
    std::vector<size_t> order;  // manifest output i -> compiled output index
    std::vector<ov::InferRequest> idle;
  };

  // An infer request taken from an entry's pool for one call; given back on destruction.
  struct Lease {
    OpenVINOBackend& owner;
    Entry* entry = nullptr;
    ov::InferRequest request;
    Lease(OpenVINOBackend& o, const std::vector<int64_t>& shape) : owner(o) {
      std::lock_guard<std::mutex> lock(owner.mutex_);
      const int64_t batch = shape.empty() ? -1 : shape[0];
      entry = &owner.compiled_for(owner.static_ ? batch : -1);
      if (!entry->idle.empty()) {
        request = std::move(entry->idle.back());
        entry->idle.pop_back();
      } else {
        try {
          request = entry->compiled.create_infer_request();
        } catch (const std::exception& e) {
          throw Error("cannot create an OpenVINO infer request for " + owner.path_ + ": " + first_line(e.what()));
        }
      }
    }
    ~Lease() {
      std::lock_guard<std::mutex> lock(owner.mutex_);
      entry->idle.push_back(std::move(request));
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
  };

  // The compiled model for `batch` (-1: the IR's own shapes), compiled the first time. Caller holds mutex_.
  Entry& compiled_for(int64_t batch) {
    const size_t statics = compiled_.size() - compiled_.count(-1);
    const int64_t key = batch >= 1 && (compiled_.count(batch) || statics < kMaxStaticBatches) ? batch : -1;
    auto it = compiled_.find(key);
    if (it != compiled_.end()) return *it->second;
    auto entry = std::make_unique<Entry>();
    try {
      std::shared_ptr<ov::Model> model = model_;
      if (key >= 1) {
        model = model_->clone();
        ov::PartialShape shape = ir_shape_;
        shape[0] = key;
        model->reshape(shape);
      }
      entry->compiled = core_.compile_model(model, "CPU", config_);
    } catch (const std::exception& e) {
      throw Error("cannot compile OpenVINO IR " + path_ +
                  (key >= 1 ? " for batch " + std::to_string(key) : std::string()) + ": " + first_line(e.what()));
    }
    // Outputs in the manifest's order, matched by tensor name (as the Python runner); unnamed ones by position.
    const auto outs = entry->compiled.outputs();
    if (output_names_.empty())
      for (size_t i = 0; i < outs.size(); ++i) entry->order.push_back(i);
    for (size_t i = 0; i < output_names_.size(); ++i) {
      size_t idx = i;
      for (size_t j = 0; j < outs.size(); ++j)
        if (outs[j].get_names().count(output_names_[i])) { idx = j; break; }
      if (idx >= outs.size())
        throw Error("OpenVINO IR " + path_ + " has no output '" + output_names_[i] + "' (it has " +
                    std::to_string(outs.size()) + " outputs; the manifest lists " +
                    std::to_string(output_names_.size()) + ")");
      entry->order.push_back(idx);
    }
    return *compiled_.emplace(key, std::move(entry)).first->second;
  }

  void set_input(ov::InferRequest& request, const Tensor& input) {
    ov::Shape shape(input.shape.begin(), input.shape.end());
    if (!ir_shape_.compatible(ov::PartialShape(shape)))
      throw Error("input shape " + ov::PartialShape(shape).to_string() + " does not fit the OpenVINO IR's input " +
                  shape_text(ir_shape_));
    try {  // the request reads the caller's buffer during infer() (OpenVINO does not write inputs)
      request.set_input_tensor(ov::Tensor(ov::element::f32, shape, const_cast<float*>(input.data.data())));
    } catch (const std::exception& e) {
      throw Error("OpenVINO rejected the input of shape " + ov::PartialShape(shape).to_string() + ": " +
                  first_line(e.what()));
    }
  }

  static std::vector<Tensor> read_outputs(const Entry& entry, ov::InferRequest& request) {
    std::vector<Tensor> outs;
    for (size_t idx : entry.order) {
      const ov::Tensor t = request.get_output_tensor(idx);
      if (t.get_element_type() != ov::element::f32)
        throw Error("OpenVINO model returned a " + t.get_element_type().get_type_name() + " output; expected float32");
      Tensor o;
      for (size_t d : t.get_shape()) o.shape.push_back(static_cast<int64_t>(d));
      const float* p = static_cast<const float*>(t.data());
      o.data.assign(p, p + t.get_size());
      outs.push_back(std::move(o));
    }
    return outs;
  }

  std::string path_;
  std::string weights_;  // the verified weights bytes (outlive model_ and every compile)
  unsigned char empty_ = 0;
  ov::Core core_;
  std::shared_ptr<ov::Model> model_;
  ov::PartialShape ir_shape_;
  bool static_ = false;
  ov::AnyMap config_;
  std::vector<std::string> output_names_;
  std::mutex mutex_;
  std::map<int64_t, std::unique_ptr<Entry>> compiled_;  // batch (-1: the IR's shapes) -> compiled model + requests
};

}  // namespace

std::unique_ptr<Backend> make_openvino_backend(const Manifest& manifest, ModelSource& source,
                                                  const Options& options) {
  return std::make_unique<OpenVINOBackend>(manifest, source, options);
}

}  // namespace vitedge
