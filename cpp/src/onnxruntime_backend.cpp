// ONNX Runtime backend: the C API of the onnxruntime wheel's shared library, opened with dlopen.
//
// No installable package ships ONNX Runtime's headers (checked: PyPI wheels, npm, Debian), so this file declares nothing from
// ORT itself: ort_api.h holds our own declarations of the documented C API (OrtApi, API version 13). Before
// any real use, load_library() checks the library's version string, asks it for our API version (GetApi
// returns nullptr when the library is older), checks that every OrtApi entry we use points into the library,
// and calls a set of entries whose answers are known (see probe_layout) to confirm that the positions in our
// declaration are the library's. Any failure is a vitedge::Error naming the library path.
//
// Library search order (first hit wins; an explicit choice that fails is an error, not a fall-through):
//   1. Options::onnxruntime_library (vitedge-bench: none; library users set it),
//   2. the environment variable VITEDGE_ONNXRUNTIME_LIB,
//   3. libonnxruntime.so.1 in the onnxruntime backend folder, if it exists: $VITEDGE_BACKEND_DIR/onnxruntime/, then
//      <folder of libvitedge.so>/vitedge/backends/onnxruntime/ (the build copies the onnxruntime wheel's library
//      there and `cmake --install` installs it there, so an installed prefix carries its own copy),
//   4. "libonnxruntime.so.1" through the dynamic loader (LD_LIBRARY_PATH, ld.so.cache, ...).
// A loaded library stays loaded for the life of the process (never dlclose'd: ORT owns thread pools and
// static state); every ORT object this backend creates is released by RAII holders.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>


#include "backend.h"
#include "plugin.h"
#include "ort_api.h"

namespace vitedge {
namespace {
namespace fs = std::filesystem;

constexpr const char* kEnvVar = "VITEDGE_ONNXRUNTIME_LIB";
constexpr const char* kLoaderName = "libonnxruntime.so.1";

std::string first_line(std::string s) {
  const auto nl = s.find_first_of("\r\n");
  if (nl != std::string::npos) s.resize(nl);
  return s;
}

/// One opened ONNX Runtime library whose C API passed the checks.
struct Library {
  std::string path;     // as given to dlopen
  std::string version;  // GetVersionString(), e.g. "1.32.0"
  const ort::Api* api = nullptr;
};

/// Turns a non-null OrtStatus into vitedge::Error("<what>: <message>") after releasing it.
void check(const ort::Api& api, ort::Status* status, const std::string& what) {
  if (status == nullptr) return;
  const char* msg = api.GetErrorMessage(status);
  std::string text = msg ? first_line(msg) : "unknown error";
  api.ReleaseStatus(status);
  throw Error(what + ": " + text);
}

// RAII: each ORT object is released with its Release* entry.
template <typename T>
struct Releaser {
  void (*fn)(T*) = nullptr;
  void operator()(T* p) const {
    if (p != nullptr && fn != nullptr) fn(p);
  }
};
template <typename T>
using Owned = std::unique_ptr<T, Releaser<T>>;

template <typename T>
Owned<T> own(T* p, void (*fn)(T*)) {
  return Owned<T>(p, Releaser<T>{fn});
}

/// A string the library allocated with the default allocator (session input/output names).
std::string take_string(const ort::Api& api, ort::Allocator* allocator, char* p) {
  std::string s = p ? p : "";
  if (p != nullptr) {
    if (ort::Status* st = api.AllocatorFree(allocator, p)) api.ReleaseStatus(st);
  }
  return s;
}

// ---- loading and checking the library ------------------------------------------------------------------

// Every entry of our declaration that we call must be non-null and inside the library we opened.
void check_entries_in_library(const ort::Api& api, const void* library_base, const std::string& where) {
  const void* const entries[] = {
      reinterpret_cast<const void*>(api.CreateStatus), reinterpret_cast<const void*>(api.GetErrorCode),
      reinterpret_cast<const void*>(api.GetErrorMessage), reinterpret_cast<const void*>(api.CreateEnv),
      reinterpret_cast<const void*>(api.CreateSession), reinterpret_cast<const void*>(api.Run),
      reinterpret_cast<const void*>(api.CreateSessionFromArray),
      reinterpret_cast<const void*>(api.CreateSessionOptions),
      reinterpret_cast<const void*>(api.SetSessionLogSeverityLevel),
      reinterpret_cast<const void*>(api.SetSessionGraphOptimizationLevel),
      reinterpret_cast<const void*>(api.SetIntraOpNumThreads), reinterpret_cast<const void*>(api.SetInterOpNumThreads),
      reinterpret_cast<const void*>(api.SessionGetInputCount), reinterpret_cast<const void*>(api.SessionGetOutputCount),
      reinterpret_cast<const void*>(api.SessionGetInputName), reinterpret_cast<const void*>(api.SessionGetOutputName),
      reinterpret_cast<const void*>(api.CreateTensorWithDataAsOrtValue), reinterpret_cast<const void*>(api.IsTensor),
      reinterpret_cast<const void*>(api.GetTensorMutableData),
      reinterpret_cast<const void*>(api.CreateTensorTypeAndShapeInfo),
      reinterpret_cast<const void*>(api.SetTensorElementType), reinterpret_cast<const void*>(api.SetDimensions),
      reinterpret_cast<const void*>(api.GetTensorElementType), reinterpret_cast<const void*>(api.GetDimensionsCount),
      reinterpret_cast<const void*>(api.GetDimensions), reinterpret_cast<const void*>(api.GetTensorShapeElementCount),
      reinterpret_cast<const void*>(api.GetTensorTypeAndShape), reinterpret_cast<const void*>(api.CreateCpuMemoryInfo),
      reinterpret_cast<const void*>(api.MemoryInfoGetName), reinterpret_cast<const void*>(api.MemoryInfoGetId),
      reinterpret_cast<const void*>(api.MemoryInfoGetMemType), reinterpret_cast<const void*>(api.MemoryInfoGetType),
      reinterpret_cast<const void*>(api.AllocatorAlloc), reinterpret_cast<const void*>(api.AllocatorFree),
      reinterpret_cast<const void*>(api.GetAllocatorWithDefaultOptions), reinterpret_cast<const void*>(api.ReleaseEnv),
      reinterpret_cast<const void*>(api.ReleaseStatus), reinterpret_cast<const void*>(api.ReleaseMemoryInfo),
      reinterpret_cast<const void*>(api.ReleaseSession), reinterpret_cast<const void*>(api.ReleaseValue),
      reinterpret_cast<const void*>(api.ReleaseTensorTypeAndShapeInfo),
      reinterpret_cast<const void*>(api.ReleaseSessionOptions),
      reinterpret_cast<const void*>(api.AddSessionConfigEntry)};
  for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); ++i) {
    Dl_info info{};
    if (entries[i] == nullptr || dladdr(entries[i], &info) == 0 || info.dli_fbase != library_base)
      throw Error(where + ": C API entry #" + std::to_string(i) +
                  " of our OrtApi declaration does not point into the library; refusing to use it");
  }
}

// Calls entries whose answers are documented, to confirm that each position in ort_api.h is the library's.
// Throws Error("<where>: C API layout check failed: <what>").
void probe_layout(const ort::Api& api, const std::string& where) {
  auto fail = [&](const std::string& what) {
    throw Error(where + ": C API layout check failed (" + what + "); refusing to use this library");
  };
  auto ok = [&](ort::Status* st, const char* what) {
    if (st != nullptr) {
      api.ReleaseStatus(st);
      fail(std::string(what) + " returned an error");
    }
  };
  // Status: CreateStatus / GetErrorCode / GetErrorMessage / ReleaseStatus.
  {
    const char* probe = "vitedge layout probe";
    ort::Status* st = api.CreateStatus(ort::kInvalidArgument, probe);
    if (st == nullptr) fail("CreateStatus returned null");
    const int code = api.GetErrorCode(st);
    const char* msg = api.GetErrorMessage(st);
    const bool good = code == ort::kInvalidArgument && msg != nullptr && std::strcmp(msg, probe) == 0;
    api.ReleaseStatus(st);
    if (!good) fail("CreateStatus/GetErrorCode/GetErrorMessage do not round-trip");
  }
  // CPU memory info: documented as name "Cpu", id 0, with the allocator and memory types we pass.
  ort::MemoryInfo* mi_raw = nullptr;
  ok(api.CreateCpuMemoryInfo(ort::kArenaAllocator, ort::kMemTypeDefault, &mi_raw), "CreateCpuMemoryInfo");
  Owned<ort::MemoryInfo> mi = own(mi_raw, api.ReleaseMemoryInfo);
  {
    const char* name = nullptr;
    int id = -1, mem_type = -1, alloc_type = -1;
    ok(api.MemoryInfoGetName(mi.get(), &name), "MemoryInfoGetName");
    ok(api.MemoryInfoGetId(mi.get(), &id), "MemoryInfoGetId");
    ok(api.MemoryInfoGetMemType(mi.get(), &mem_type), "MemoryInfoGetMemType");
    ok(api.MemoryInfoGetType(mi.get(), &alloc_type), "MemoryInfoGetType");
    if (name == nullptr || std::strcmp(name, "Cpu") != 0 || id != 0 || mem_type != ort::kMemTypeDefault ||
        alloc_type != ort::kArenaAllocator)
      fail("CreateCpuMemoryInfo/MemoryInfoGet* do not round-trip");
  }
  // Type-and-shape info built by hand, read back.
  {
    ort::TensorTypeAndShapeInfo* raw = nullptr;
    ok(api.CreateTensorTypeAndShapeInfo(&raw), "CreateTensorTypeAndShapeInfo");
    Owned<ort::TensorTypeAndShapeInfo> info = own(raw, api.ReleaseTensorTypeAndShapeInfo);
    const int64_t dims[3] = {2, 3, 5};
    ok(api.SetTensorElementType(info.get(), ort::kFloat), "SetTensorElementType");
    ok(api.SetDimensions(info.get(), dims, 3), "SetDimensions");
    int type = -1;
    size_t rank = 0, count = 0;
    int64_t back[3] = {0, 0, 0};
    ok(api.GetTensorElementType(info.get(), &type), "GetTensorElementType");
    ok(api.GetDimensionsCount(info.get(), &rank), "GetDimensionsCount");
    if (rank == 3) ok(api.GetDimensions(info.get(), back, 3), "GetDimensions");
    ok(api.GetTensorShapeElementCount(info.get(), &count), "GetTensorShapeElementCount");
    if (type != ort::kFloat || rank != 3 || std::memcmp(back, dims, sizeof(dims)) != 0 || count != 30)
      fail("TensorTypeAndShapeInfo setters/getters do not round-trip");
  }
  // A tensor over our own buffer: same pointer, shape and type back.
  {
    float buffer[6] = {0, 1, 2, 3, 4, 5};
    const int64_t shape[2] = {2, 3};
    ort::Value* raw = nullptr;
    ok(api.CreateTensorWithDataAsOrtValue(mi.get(), buffer, sizeof(buffer), shape, 2, ort::kFloat, &raw),
       "CreateTensorWithDataAsOrtValue");
    Owned<ort::Value> value = own(raw, api.ReleaseValue);
    int is_tensor = 0;
    void* data = nullptr;
    ok(api.IsTensor(value.get(), &is_tensor), "IsTensor");
    ok(api.GetTensorMutableData(value.get(), &data), "GetTensorMutableData");
    ort::TensorTypeAndShapeInfo* info_raw = nullptr;
    ok(api.GetTensorTypeAndShape(value.get(), &info_raw), "GetTensorTypeAndShape");
    Owned<ort::TensorTypeAndShapeInfo> info = own(info_raw, api.ReleaseTensorTypeAndShapeInfo);
    size_t count = 0;
    ok(api.GetTensorShapeElementCount(info.get(), &count), "GetTensorShapeElementCount");
    if (is_tensor != 1 || data != static_cast<void*>(buffer) || count != 6)
      fail("a tensor over a caller buffer does not report that buffer and shape");
  }
  // The default allocator hands out and takes back memory.
  {
    ort::Allocator* allocator = nullptr;
    ok(api.GetAllocatorWithDefaultOptions(&allocator), "GetAllocatorWithDefaultOptions");
    void* p = nullptr;
    ok(api.AllocatorAlloc(allocator, 64, &p), "AllocatorAlloc");
    if (p == nullptr) fail("AllocatorAlloc returned null");
    std::memset(p, 0, 64);
    ok(api.AllocatorFree(allocator, p), "AllocatorFree");
  }
  // Session options accept the settings we use.
  {
    ort::SessionOptions* raw = nullptr;
    ok(api.CreateSessionOptions(&raw), "CreateSessionOptions");
    Owned<ort::SessionOptions> so = own(raw, api.ReleaseSessionOptions);
    ok(api.SetIntraOpNumThreads(so.get(), 1), "SetIntraOpNumThreads");
    ok(api.SetInterOpNumThreads(so.get(), 1), "SetInterOpNumThreads");
    ok(api.SetSessionGraphOptimizationLevel(so.get(), ort::kEnableAll), "SetSessionGraphOptimizationLevel");
    ok(api.SetSessionLogSeverityLevel(so.get(), ort::kLogError), "SetSessionLogSeverityLevel");
    ok(api.AddSessionConfigEntry(so.get(), "session.vitedge_probe", "1"), "AddSessionConfigEntry");
  }
}

// "1.32.0" -> (1, 32). Returns false when the string does not start with "<int>.<int>".
bool parse_version(const char* s, int& major, int& minor) {
  if (s == nullptr) return false;
  char* end = nullptr;
  const long ma = std::strtol(s, &end, 10);
  if (end == s || *end != '.') return false;
  const char* p = end + 1;
  const long mi = std::strtol(p, &end, 10);
  if (end == p) return false;
  major = static_cast<int>(ma);
  minor = static_cast<int>(mi);
  return true;
}

Library open_and_check(void* handle, const std::string& path) {
  const std::string where = "ONNX Runtime library " + path;
  dlerror();
  void* sym = dlsym(handle, "OrtGetApiBase");
  if (sym == nullptr) throw Error(where + " exports no OrtGetApiBase: not an ONNX Runtime library");
  Dl_info self{};
  if (dladdr(sym, &self) == 0) throw Error(where + ": cannot locate OrtGetApiBase in memory");
  auto get_base = reinterpret_cast<ort::GetApiBaseFn>(sym);
  const ort::ApiBase* base = get_base();
  if (base == nullptr || base->GetApi == nullptr || base->GetVersionString == nullptr)
    throw Error(where + ": OrtGetApiBase returned no API");
  const char* version = base->GetVersionString();
  int major = 0, minor = 0;
  if (!parse_version(version, major, minor))
    throw Error(where + " reports an unparsable version '" + (version ? version : "(null)") + "'");
  const std::string v = version;
  if (major != ort::kMinMajor || minor < ort::kMinMinor)
    throw Error(where + " is version " + v + "; this runner's C API binding needs " +
                std::to_string(ort::kMinMajor) + "." + std::to_string(ort::kMinMinor) + " or later within major " +
                std::to_string(ort::kMinMajor) + " (set " + kEnvVar + " to another libonnxruntime.so)");
  const auto* api = static_cast<const ort::Api*>(base->GetApi(ort::kApiVersion));
  if (api == nullptr)
    throw Error(where + " (version " + v + ") does not provide C API version " + std::to_string(ort::kApiVersion));
  check_entries_in_library(*api, self.dli_fbase, where);
  probe_layout(*api, where + " (version " + v + ")");
  return Library{path, v, api};
}

const Library& load_library(const Options& options) {
  static std::mutex mutex;
  static std::map<std::string, Library> loaded;  // by the path given to dlopen; never unloaded
  std::lock_guard<std::mutex> lock(mutex);

  std::vector<std::string> candidates;
  std::string chosen_by;
  const char* env = std::getenv(kEnvVar);
  if (!options.onnxruntime_library.empty()) {
    candidates = {options.onnxruntime_library};
    chosen_by = "Options::onnxruntime_library";
  } else if (env != nullptr && *env != '\0') {
    candidates = {env};
    chosen_by = kEnvVar;
  }
  std::string tried;
  if (candidates.empty()) {
    for (const std::string& dir : backend_dirs("onnxruntime")) {
      const std::string bundled = (fs::path(dir) / kLoaderName).string();
      std::error_code ec;
      if (fs::is_regular_file(bundled, ec)) {
        candidates.push_back(bundled);
        break;
      }
      tried += (tried.empty() ? "" : "; ") + bundled + " (no such file)";
    }
    candidates.push_back(kLoaderName);
  }
  for (const std::string& path : candidates) {
    auto it = loaded.find(path);
    if (it != loaded.end()) return it->second;
    dlerror();
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* err = dlerror();
      tried += (tried.empty() ? "" : "; ") + path + " (" + first_line(err ? err : "dlopen failed") + ")";
      continue;
    }
    // A library that fails the checks stays mapped (not dlclose'd: its static state may already run).
    return loaded.emplace(path, open_and_check(handle, path)).first->second;
  }
  if (!chosen_by.empty())
    throw Error("cannot load the ONNX Runtime library named by " + chosen_by + ": " + tried);
  throw Error("cannot find the ONNX Runtime library: tried " + tried + "; set " + kEnvVar +
              " to the path of libonnxruntime.so (pip install onnxruntime ships it as "
              "onnxruntime/capi/libonnxruntime.so.<version>)");
}

// ---- the artifact's manifest: names and session config ---------------------------------------------------

struct ManifestBits {
  std::string input;
  std::vector<std::string> outputs;
  std::vector<std::pair<std::string, std::string>> session_config;
  ort::GraphOptimizationLevel level = ort::kEnableAll;
};

// From the parsed manifest (parse_manifest has allow-listed onnxruntime.{graph_optimization_level, session_config}
// and quantization.session_config, which the Python runner applies too: vitedge/targets/onnx.py runtime_settings).
ManifestBits manifest_bits(const Manifest& m) {
  ManifestBits bits;
  bits.input = m.inputs.empty() ? "" : m.inputs.front().name;
  for (const auto& o : m.outputs) bits.outputs.push_back(o.name);
  bits.session_config = m.ort_session_config;
  static const std::pair<const char*, ort::GraphOptimizationLevel> kLevels[] = {
      {"ORT_DISABLE_ALL", ort::kDisableAll}, {"ORT_ENABLE_BASIC", ort::kEnableBasic},
      {"ORT_ENABLE_EXTENDED", ort::kEnableExtended}, {"ORT_ENABLE_ALL", ort::kEnableAll}};
  for (const auto& l : kLevels)
    if (m.ort_graph_optimization_level == l.first) bits.level = l.second;
  return bits;
}

// ---- the backend ----------------------------------------------------------------------------------------

class OnnxRuntimeBackend final : public Backend {
 public:
  OnnxRuntimeBackend(const Manifest& manifest, ModelSource& source, const Options& options)
      : lib_(load_library(options)), api_(*lib_.api), path_(source.path) {
    const std::string& path = path_;
    const ManifestBits bits = manifest_bits(manifest);
    const std::string load_err = "cannot load ONNX model " + path + " with ONNX Runtime " + lib_.version;

    ort::Env* env = nullptr;
    check(api_, api_.CreateEnv(ort::kLogFatal, "vitedge", &env), "ONNX Runtime CreateEnv failed");
    env_ = own(env, api_.ReleaseEnv);

    ort::SessionOptions* so_raw = nullptr;
    check(api_, api_.CreateSessionOptions(&so_raw), "ONNX Runtime CreateSessionOptions failed");
    Owned<ort::SessionOptions> so = own(so_raw, api_.ReleaseSessionOptions);
    // As the Python runner: errors only in the log, intra-op threads as asked (0 = ORT's default),
    // one inter-op thread, the artifact's graph optimization level (all when it names none), then its session
    // config entries.
    check(api_, api_.SetSessionLogSeverityLevel(so.get(), ort::kLogFatal), load_err);
    check(api_, api_.SetIntraOpNumThreads(so.get(), options.threads), load_err);
    check(api_, api_.SetInterOpNumThreads(so.get(), 1), load_err);
    check(api_, api_.SetSessionGraphOptimizationLevel(so.get(), bits.level), load_err);
    for (const auto& [key, value] : bits.session_config)
      check(api_, api_.AddSessionConfigEntry(so.get(), key.c_str(), value.c_str()),
            load_err + ": session config '" + key + "'");

    ort::Session* session = nullptr;
    // From the verified bytes (Runner::open refused external data, which ORT would read by path).
    check(api_, api_.CreateSessionFromArray(env_.get(), source.bytes.data(), source.bytes.size(), so.get(), &session),
          load_err);
    session_ = own(session, api_.ReleaseSession);

    ort::MemoryInfo* mi = nullptr;
    check(api_, api_.CreateCpuMemoryInfo(ort::kArenaAllocator, ort::kMemTypeDefault, &mi),
          "ONNX Runtime CreateCpuMemoryInfo failed");
    memory_info_ = own(mi, api_.ReleaseMemoryInfo);

    ort::Allocator* allocator = nullptr;
    check(api_, api_.GetAllocatorWithDefaultOptions(&allocator), "ONNX Runtime GetAllocatorWithDefaultOptions failed");
    size_t n_in = 0, n_out = 0;
    check(api_, api_.SessionGetInputCount(session_.get(), &n_in), load_err);
    check(api_, api_.SessionGetOutputCount(session_.get(), &n_out), load_err);
    if (n_in != 1)
      throw Error(path + " has " + std::to_string(n_in) + " inputs; this runner feeds exactly one (the image batch)");
    if (n_out == 0) throw Error(path + " has no outputs");
    char* name = nullptr;
    check(api_, api_.SessionGetInputName(session_.get(), 0, allocator, &name), load_err);
    input_name_ = take_string(api_, allocator, name);
    for (size_t i = 0; i < n_out; ++i) {
      name = nullptr;
      check(api_, api_.SessionGetOutputName(session_.get(), i, allocator, &name), load_err);
      output_names_.push_back(take_string(api_, allocator, name));
    }
    // The manifest was written from this graph: its names must be the session's.
    if (!bits.input.empty() && bits.input != input_name_)
      throw Error(path + ": the graph's input is '" + input_name_ + "' but the manifest records '" + bits.input + "'");
    if (!bits.outputs.empty() && bits.outputs != output_names_) {
      std::string got;
      for (const auto& n : output_names_) got += (got.empty() ? "" : ", ") + n;
      throw Error(path + ": the graph's outputs (" + got + ") differ from the manifest's");
    }
    for (const auto& n : output_names_) output_cstr_.push_back(n.c_str());
  }

  std::string runtime() const override { return "onnxruntime"; }

  // OrtSession::Run may be called from several threads at once on one session (ORT's documented contract),
  // and run() touches no mutable member: Runner::run's thread-safety holds.
  std::vector<Tensor> run(const Tensor& input) override {
    const std::string err = "ONNX Runtime failed running " + path_;
    Owned<ort::Value> in = make_input(input, err);
    std::vector<Owned<ort::Value>> owned = run_session(in.get(), err);
    std::vector<Tensor> result;
    result.reserve(owned.size());
    for (size_t i = 0; i < owned.size(); ++i) {
      const std::string what = err + " (output '" + output_names_[i] + "')";
      if (!owned[i]) throw Error(what + ": no value returned");
      ort::TensorTypeAndShapeInfo* info_raw = nullptr;
      check(api_, api_.GetTensorTypeAndShape(owned[i].get(), &info_raw), what);
      Owned<ort::TensorTypeAndShapeInfo> info = own(info_raw, api_.ReleaseTensorTypeAndShapeInfo);
      int type = 0;
      size_t rank = 0;
      check(api_, api_.GetTensorElementType(info.get(), &type), what);
      if (type != ort::kFloat)
        throw Error(what + ": element type " + std::to_string(type) +
                    " (ONNX TensorProto code); this runner returns float32 (code 1) outputs only");
      check(api_, api_.GetDimensionsCount(info.get(), &rank), what);
      Tensor t;
      t.name = output_names_[i];
      t.shape.assign(rank, 0);
      if (rank > 0) check(api_, api_.GetDimensions(info.get(), t.shape.data(), rank), what);
      const int64_t n = t.numel();
      void* data = nullptr;
      check(api_, api_.GetTensorMutableData(owned[i].get(), &data), what);
      if (n > 0 && data == nullptr) throw Error(what + ": no data");
      const float* f = static_cast<const float*>(data);
      t.data.assign(f, f + n);
      result.push_back(std::move(t));
    }
    return result;
  }

  // The runtime's own loop for vitedge-bench --bare: one prepared input value, Run, outputs released.
  std::vector<double> time_native(const Tensor& input, int warmup, int iters) override {
    const std::string err = "ONNX Runtime failed running " + path_;
    Owned<ort::Value> in = make_input(input, err);
    for (int i = 0; i < warmup; ++i) run_session(in.get(), err);
    std::vector<double> ms;
    ms.reserve(iters);
    for (int i = 0; i < iters; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      run_session(in.get(), err);
      const auto t1 = std::chrono::steady_clock::now();
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    return ms;
  }

 private:
  // A tensor value over the caller's buffer (not copied; the buffer must outlive the value). ORT only reads
  // graph inputs, so the const_cast is not written through.
  Owned<ort::Value> make_input(const Tensor& input, const std::string& err) const {
    ort::Value* raw = nullptr;
    check(api_,
          api_.CreateTensorWithDataAsOrtValue(memory_info_.get(), const_cast<float*>(input.data.data()),
                                              input.data.size() * sizeof(float), input.shape.data(),
                                              input.shape.size(), ort::kFloat, &raw),
          err);
    return own(raw, api_.ReleaseValue);
  }

  // Runs the session on one input value; returns every output (in the session's order), each owned.
  std::vector<Owned<ort::Value>> run_session(const ort::Value* in, const std::string& err) const {
    const char* in_names[1] = {input_name_.c_str()};
    const ort::Value* inputs[1] = {in};
    std::vector<ort::Value*> outs(output_cstr_.size(), nullptr);
    ort::Status* st = api_.Run(session_.get(), nullptr, in_names, inputs, 1, output_cstr_.data(),
                               output_cstr_.size(), outs.data());
    std::vector<Owned<ort::Value>> owned;  // released however we leave
    owned.reserve(outs.size());
    for (ort::Value* v : outs) owned.push_back(own(v, api_.ReleaseValue));
    check(api_, st, err);
    return owned;
  }

  const Library& lib_;
  const ort::Api& api_;
  std::string path_;
  // Declaration order = reverse release order: sessions go before the environment.
  Owned<ort::Env> env_;
  Owned<ort::Session> session_;
  Owned<ort::MemoryInfo> memory_info_;
  std::string input_name_;
  std::vector<std::string> output_names_;
  std::vector<const char*> output_cstr_;
};

}  // namespace

std::unique_ptr<Backend> make_onnxruntime_backend(const Manifest& manifest, ModelSource& source,
                                                  const Options& options) {
  // Only ONNX Runtime's CPU execution provider is used: refuse a CUDA device instead of running on the CPU.
  if (options.device != "cpu")
    throw Error("the ONNX Runtime backend runs on the CPU in vitedge; device '" + options.device +
                "' is for TorchScript and AOTInductor artifacts");
  return std::make_unique<OnnxRuntimeBackend>(manifest, source, options);
}

}  // namespace vitedge
