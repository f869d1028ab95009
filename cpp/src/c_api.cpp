// The C ABI (include/vitedge/vitedge.h) over vitedge::Runner. No C++ exception leaves these functions.
#include "vitedge/vitedge.h"

#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "vitedge/runner.h"

#ifndef VITEDGE_VERSION
#define VITEDGE_VERSION "unknown"
#endif

struct vitedge_runner {
  std::unique_ptr<vitedge::Runner> runner;
  std::string runtime;
};

struct vitedge_outputs {
  std::vector<vitedge::Tensor> tensors;
};

namespace {

thread_local std::string last_error;

vitedge_status fail(vitedge_status status, const std::string& message) {
  try {
    last_error = message;
  } catch (...) {
  }
  return status;
}

// Run `fn`, mapping exceptions to status codes and vitedge_last_error().
template <class Fn>
vitedge_status guarded(Fn&& fn) {
  try {
    last_error.clear();
    return fn();
  } catch (const vitedge::Error& e) {
    return fail(VITEDGE_ERROR, e.what());
  } catch (const std::bad_alloc&) {
    return fail(VITEDGE_INTERNAL, "out of memory");
  } catch (const std::exception& e) {
    return fail(VITEDGE_INTERNAL, std::string("unexpected error: ") + e.what());
  } catch (...) {
    return fail(VITEDGE_INTERNAL, "unexpected non-standard exception");
  }
}

const vitedge::Preprocessing& preprocessing_of(const vitedge_runner* r) {
  const auto& m = r->runner->manifest();
  if (!m.preprocessing) throw vitedge::Error("the manifest has no preprocessing block");
  return *m.preprocessing;
}

vitedge_status copy_image(const vitedge::Tensor& t, float* out, size_t capacity) {
  if (capacity < t.data.size())
    return fail(VITEDGE_INVALID_ARGUMENT, "output buffer holds " + std::to_string(capacity) + " floats, the image needs " +
                                              std::to_string(t.data.size()));
  std::memcpy(out, t.data.data(), t.data.size() * sizeof(float));
  return VITEDGE_OK;
}

const vitedge::Tensor* at(const vitedge_outputs* o, size_t i) {
  return o && i < o->tensors.size() ? &o->tensors[i] : nullptr;
}

}  // namespace

extern "C" {

void vitedge_options_init(vitedge_options* options) {
  if (!options) return;
  options->struct_size = sizeof(vitedge_options);
  options->threads = 0;
  options->device = "cpu";
  options->warmup = 0;
  options->verify = 1;
  options->trusted_keys = nullptr;
  options->num_trusted_keys = 0;
  options->allow_unsigned_code = 0;
}

const char* vitedge_last_error(void) { return last_error.c_str(); }

const char* vitedge_version(void) { return VITEDGE_VERSION; }

vitedge_status vitedge_open(const char* artifact, const vitedge_options* options, vitedge_runner** runner) {
  if (!runner) return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_open: runner (the out pointer) is NULL");
  *runner = nullptr;
  if (!artifact) return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_open: artifact is NULL");
  return guarded([&] {
    vitedge::Options opt;
    vitedge_options given;  // the caller's struct, its missing (newer) fields at their defaults
    if (options) {
      // The struct's layout is known by its size (the ABI grows by appending fields, as ONNX Runtime's does). Only
      // struct_size bytes of the caller's struct are read: an older, smaller layout is never read past its end.
      const size_t size = options->struct_size;
      if (size < VITEDGE_OPTIONS_SIZE_V1 || size > sizeof(vitedge_options))
        return fail(VITEDGE_INVALID_ARGUMENT,
                    "vitedge_open: options->struct_size is " + std::to_string(size) + ", this libvitedge reads " +
                        std::to_string(VITEDGE_OPTIONS_SIZE_V1) + " to " + std::to_string(sizeof(vitedge_options)) +
                        (size == 0 ? " (the struct was not initialized: call vitedge_options_init or use "
                                     "VITEDGE_OPTIONS_INIT before setting fields)"
                         : size > sizeof(vitedge_options)
                             ? " (built against a newer vitedge.h than this library: use the matching libvitedge)"
                             : " (not a vitedge_options layout: call vitedge_options_init before setting fields)"));
      vitedge_options_init(&given);
      std::memcpy(static_cast<void*>(&given), options, size);
      options = &given;
      if (options->num_trusted_keys > 0 && !options->trusted_keys)
        return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_open: num_trusted_keys > 0 but trusted_keys is NULL");
      if (options->num_trusted_keys > 1024)
        return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_open: num_trusted_keys above 1024");
      opt.threads = options->threads;
      opt.device = options->device ? options->device : "cpu";
      opt.warmup = options->warmup;
      opt.verify = options->verify != 0;
      for (size_t i = 0; i < options->num_trusted_keys; ++i) {
        if (!options->trusted_keys[i])
          return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_open: trusted_keys[" + std::to_string(i) + "] is NULL");
        opt.trusted_keys.emplace_back(options->trusted_keys[i]);
      }
      opt.allow_unsigned_code = options->allow_unsigned_code != 0;
    }
    auto handle = std::make_unique<vitedge_runner>();
    handle->runner = vitedge::Runner::open(artifact, opt);
    handle->runtime = handle->runner->runtime();
    *runner = handle.release();
    return VITEDGE_OK;
  });
}

void vitedge_close(vitedge_runner* runner) { delete runner; }

const char* vitedge_runtime(const vitedge_runner* runner) { return runner ? runner->runtime.c_str() : nullptr; }

vitedge_status vitedge_input_shape(const vitedge_runner* runner, int64_t batch, int64_t* shape, size_t* rank) {
  if (!runner || !shape || !rank) return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_input_shape: NULL argument");
  if (batch < 1) return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_input_shape: batch must be >= 1");
  return guarded([&] {
    const auto& m = runner->runner->manifest();
    std::vector<int64_t> s = m.inputs.front().shape;
    if (*rank < s.size())
      return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_input_shape: shape holds " + std::to_string(*rank) +
                                                " values, the input has rank " + std::to_string(s.size()));
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] >= 0) continue;
      if (i == 0) s[i] = batch;
      else if (m.preprocessing && s.size() == 4 && i >= 2) s[i] = i == 2 ? m.preprocessing->height : m.preprocessing->width;
      else throw vitedge::Error("input dimension " + std::to_string(i) + " is dynamic and the manifest gives no size for it");
    }
    if (s[0] != batch)
      throw vitedge::Error("this artifact has a fixed batch of " + std::to_string(s[0]) + ", not " + std::to_string(batch));
    std::copy(s.begin(), s.end(), shape);
    *rank = s.size();
    return VITEDGE_OK;
  });
}

size_t vitedge_num_labels(const vitedge_runner* runner) { return runner ? runner->runner->manifest().labels.size() : 0; }

const char* vitedge_label(const vitedge_runner* runner, size_t index) {
  if (!runner || index >= runner->runner->manifest().labels.size()) return nullptr;
  return runner->runner->manifest().labels[index].c_str();
}

vitedge_status vitedge_preprocess_file(const vitedge_runner* runner, const char* path, float* out, size_t capacity) {
  if (!runner || !path || !out) return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_preprocess_file: NULL argument");
  return guarded([&] { return copy_image(vitedge::load_image(path, preprocessing_of(runner)), out, capacity); });
}

vitedge_status vitedge_preprocess_rgb(const vitedge_runner* runner, const uint8_t* rgb, int width, int height,
                                      float* out, size_t capacity) {
  if (!runner || !rgb || !out) return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_preprocess_rgb: NULL argument");
  return guarded([&] {
    return copy_image(vitedge::preprocess_rgb(rgb, width, height, preprocessing_of(runner)), out, capacity);
  });
}

vitedge_status vitedge_run(const vitedge_runner* runner, const float* input, const int64_t* shape, size_t rank,
                           vitedge_outputs** outputs) {
  if (!outputs) return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_run: outputs (the out pointer) is NULL");
  *outputs = nullptr;
  if (!runner || !input || !shape) return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_run: NULL argument");
  if (rank == 0 || rank > 8) return fail(VITEDGE_INVALID_ARGUMENT, "vitedge_run: rank must be 1..8");
  return guarded([&] {
    vitedge::Tensor x;
    x.shape.assign(shape, shape + rank);
    int64_t n = 1;
    for (int64_t d : x.shape) {
      if (d < 1 || d > (int64_t{1} << 31))
        throw vitedge::Error("vitedge_run: every dimension must be in [1, 2^31], got " + std::to_string(d));
      n *= d;
      if (n > (int64_t{1} << 31)) throw vitedge::Error("vitedge_run: input of over 2^31 elements");
    }
    x.data.assign(input, input + n);
    auto o = std::make_unique<vitedge_outputs>();
    o->tensors = runner->runner->run(x);
    *outputs = o.release();
    return VITEDGE_OK;
  });
}

size_t vitedge_outputs_count(const vitedge_outputs* outputs) { return outputs ? outputs->tensors.size() : 0; }
const char* vitedge_output_name(const vitedge_outputs* o, size_t i) { return at(o, i) ? at(o, i)->name.c_str() : nullptr; }
size_t vitedge_output_rank(const vitedge_outputs* o, size_t i) { return at(o, i) ? at(o, i)->shape.size() : 0; }
const int64_t* vitedge_output_shape(const vitedge_outputs* o, size_t i) { return at(o, i) ? at(o, i)->shape.data() : nullptr; }
const float* vitedge_output_data(const vitedge_outputs* o, size_t i) { return at(o, i) ? at(o, i)->data.data() : nullptr; }
size_t vitedge_output_numel(const vitedge_outputs* o, size_t i) { return at(o, i) ? at(o, i)->data.size() : 0; }
void vitedge_outputs_free(vitedge_outputs* outputs) { delete outputs; }

}  // extern "C"
