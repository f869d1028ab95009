// Runner: manifest checks, backend selection, input validation. No runtime headers here.
#include <cmath>
#include <filesystem>
#include <sstream>
#include <system_error>

#include <algorithm>
#include <map>

#include "artifact_io.h"
#include "backend.h"
#include "signature.h"
#include "sha256.h"
#include "vitedge/runner.h"

namespace vitedge {
namespace fs = std::filesystem;

namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << (shape.size() == 1 ? ",)" : ")");
  return os.str();
}

// Manifest shapes print -1 as "N" (dynamic) for readability.
std::string spec_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    os << (i ? ", " : "");
    if (shape[i] < 0) os << "any"; else os << shape[i];
  }
  os << ")";
  return os.str();
}

}  // namespace

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

// ---- backend dispatch ---------------------------------------------------------------------------------
// One row per manifest (target, backend). A backend not compiled in has no factory but says how to get it.
// To add a backend: declare make_<x>_backend(path, options) in backend.h and add one row here, under
// #ifdef VITEDGE_WITH_<X> (the #else row keeps the error message telling users how to rebuild).
struct BackendRow {
  const char* target;
  const char* backend;
  BackendFactory make;       // nullptr: not built into this runner
  const char* rebuild_hint;  // when make is nullptr
};

const std::vector<BackendRow>& backend_table() {
  static const std::vector<BackendRow> rows = {
      {"torchscript", "libtorch", &make_torchscript_backend, ""},
      {"aotinductor", "libtorch", &make_aotinductor_backend, ""},
#ifdef VITEDGE_WITH_ONNXRUNTIME
      {"onnx", "onnxruntime", &make_onnxruntime_backend, ""},
#else
      {"onnx", "onnxruntime", nullptr, "-DVITEDGE_WITH_ONNXRUNTIME=ON (needs the onnxruntime wheel's libonnxruntime.so)"},
#endif
#ifdef VITEDGE_WITH_EXECUTORCH
      {"executorch", "executorch", &make_executorch_backend, ""},
#else
      {"executorch", "executorch", nullptr, "-DVITEDGE_WITH_EXECUTORCH=ON (needs the executorch wheel's C++ libraries)"},
#endif
#ifdef VITEDGE_WITH_OPENVINO
      {"openvino", "openvino", &make_openvino_backend, ""},
#else
      {"openvino", "openvino", nullptr, "-DVITEDGE_WITH_OPENVINO=ON (needs the openvino wheel's C++ runtime and CMake config)"},
#endif
#ifdef VITEDGE_WITH_TENSORRT
      {"trt", "tensorrt", &make_tensorrt_backend, ""},
#else
      {"trt", "tensorrt", nullptr, "-DVITEDGE_WITH_TENSORRT=ON (needs TensorRT and a CUDA GPU)"},
#endif
  };
  return rows;
}

std::string built_list() {
  std::string s;
  for (const auto& r : backend_table())
    if (r.make) s += std::string(s.empty() ? "" : ", ") + r.backend + " (target " + r.target + ")";
  return s;
}

const BackendRow& pick_backend(const Manifest& m) {
  for (const auto& r : backend_table()) {
    if (m.target != r.target) continue;
    if (m.backend != r.backend)
      throw Error("manifest names target '" + m.target + "' with backend '" + m.backend + "'; this runner runs '" +
                  m.target + "' artifacts with backend '" + r.backend + "'");
    if (!r.make)
      throw Error("backend '" + m.backend + "' (target '" + m.target + "') is not built: this runner was built "
                  "without the " + m.backend + " backend; rebuild with " + r.rebuild_hint);
    return r;
  }
  throw Error("backend '" + m.backend + "' (target '" + m.target + "') is not known to this vitedge runner; "
              "built backends: " + built_list());
}

void check_device(const std::string& device) {
  bool ok = device == "cpu" || device == "cuda";
  if (!ok && device.rfind("cuda:", 0) == 0 && device.size() > 5 && device.size() <= 8) {
    ok = true;
    for (size_t i = 5; i < device.size(); ++i) ok = ok && device[i] >= '0' && device[i] <= '9';
  }
  if (!ok) throw Error("device must be \"cpu\", \"cuda\" or \"cuda:N\", got '" + device + "'");
}

// A batch-1 zero input of the manifest's input shape (dynamic H, W from the preprocessing size), for warm-up.
Tensor warmup_input(const Manifest& m) {
  Tensor t;
  t.shape = m.inputs.front().shape;
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] >= 0) continue;
    if (i == 0) t.shape[i] = 1;
    else if (m.preprocessing && t.shape.size() == 4 && i >= 2) t.shape[i] = i == 2 ? m.preprocessing->height : m.preprocessing->width;
    else throw Error("options.warmup needs a size for input dimension " + std::to_string(i) + ", which is dynamic");
  }
  t.data.assign(static_cast<size_t>(t.numel()), 0.0f);
  return t;
}

}  // namespace

std::vector<BackendInfo> backends() {
  std::vector<BackendInfo> out;
  for (const auto& r : backend_table()) out.push_back({r.target, r.backend, r.make != nullptr, r.rebuild_hint});
  return out;
}

const Tensor& output(const std::vector<Tensor>& outputs, const std::string& name) {
  std::string names;
  for (const Tensor& t : outputs) {
    if (t.name == name) return t;
    names += (names.empty() ? "" : ", ") + t.name;
  }
  throw Error("no output named '" + name + "'; outputs: " + (names.empty() ? "(none)" : names));
}

Runner::Runner(std::string dir, Manifest manifest, Options options, std::unique_ptr<Backend> backend)
    : dir_(std::move(dir)), manifest_(std::move(manifest)), options_(std::move(options)), backend_(std::move(backend)) {}

Runner::~Runner() = default;

std::string Runner::runtime() const {
  const std::string r = backend_->runtime();
  return r.empty() ? manifest_.backend : r;
}

Tensor Runner::load_image(const std::string& path) const {
  if (!manifest_.preprocessing)
    throw Error("the manifest of " + dir_ + " has no preprocessing block; preprocess the image yourself");
  return vitedge::load_image(path, *manifest_.preprocessing);
}

namespace {

bool is_code_target(const std::string& target) { return target == "torchscript" || target == "aotinductor"; }

// The convention-2 refusal (identical wording in Python and C++).
std::string unsigned_code_refusal(const std::string& target, const std::string& dir) {
  const char* what = target == "torchscript" ? "TorchScript file" : "AOTInductor package";
  return "refusing to load " + target + " artifact " + dir + ": its " + what +
         " runs code when it is loaded and it is not signed by a trusted key; pass --key PUB.pem to check its "
         "signature, or --trust-code if you trust its source";
}

// model.sig against options.trusted_keys, then every file of the folder against the signed list. The main file
// is left to the caller (checked on the bytes the backend gets); manifest.json is checked on `manifest_bytes`.
std::map<std::string, std::string> check_signature(const std::string& dir, const std::string& manifest_bytes,
                                                   const Options& options) {
  const std::string sig_path = (fs::path(dir) / kSignatureFile).string();
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(sig_path, ec)))
    throw Error("artifact " + dir + " has no signature (" + kSignatureFile + ") but trusted keys were given; "
                "refusing to load it (sign it with vitedge export --sign KEY)");
  const auto signed_files =
      verify_signature_bundle(read_regular_file(sig_path, kMaxManifestBytes, "signature"), options.trusted_keys, sig_path);
  const std::vector<std::string> present = list_artifact_tree(dir);
  for (const std::string& name : present)
    if (!signed_files.count(name))
      throw Error("artifact " + dir + " holds '" + name + "', which its signature does not cover; refusing it");
  for (const auto& [name, digest] : signed_files) {
    if (!std::binary_search(present.begin(), present.end(), name))
      throw Error("artifact " + dir + " lacks '" + name + "', which its signature covers; refusing it");
  }
  const auto mf = signed_files.find("manifest.json");
  if (mf == signed_files.end()) throw Error("the signature of " + dir + " does not cover manifest.json; refusing it");
  if (sha256_hex(manifest_bytes.data(), manifest_bytes.size()) != mf->second)
    throw Error("manifest.json of " + dir + " does not match its signature (altered after signing); refusing it");
  return signed_files;
}

}  // namespace

void (*after_verify_hook_for_tests)(const std::string& model_path) = nullptr;

std::unique_ptr<Runner> Runner::open(const std::string& artifact_dir, const Options& options) {
  std::error_code ec;
  if (!fs::is_directory(artifact_dir, ec))
    throw Error("artifact directory '" + artifact_dir + "' does not exist or is not a directory");
  if (options.threads < 0) throw Error("threads must be >= 0, got " + std::to_string(options.threads));
  if (options.warmup < 0) throw Error("warmup must be >= 0, got " + std::to_string(options.warmup));
  check_device(options.device);
  // manifest.json is read once: its signature (if checked) and its parse use the same bytes.
  const std::string manifest_path = artifact_dir + "/manifest.json";
  if (!fs::exists(fs::symlink_status(manifest_path, ec)))
    throw Error("cannot open " + manifest_path + " (is '" + artifact_dir + "' a vitedge artifact directory?)");
  artifact_file_path(artifact_dir, "manifest.json");  // a symlink out of the folder: Error
  const std::string manifest_bytes = read_regular_file(manifest_path, kMaxManifestBytes, "manifest");
  const bool check_sig = !options.trusted_keys.empty();
  std::map<std::string, std::string> signed_files;
  if (check_sig) signed_files = check_signature(artifact_dir, manifest_bytes, options);
  Manifest m = parse_manifest(manifest_bytes, manifest_path);
  if (!check_sig && is_code_target(m.target) && !options.allow_unsigned_code)
    throw Error(unsigned_code_refusal(m.target, artifact_dir));
  const BackendRow& row = pick_backend(m);
  // parse_manifest has already refused file names that leave the artifact directory.
  // The other listed files: sizes + SHA-256 (every entry must carry a sha256); the main file is checked below on
  // the bytes the backend gets.
  // (files a backend loads besides the main one, the OpenVINO weights, are left out here too: they are read once and
  // checked below, on the bytes the backend gets)
  if (options.verify && m.openvino_weights.empty()) verify_artifact_files(artifact_dir, m, /*include_artifact=*/false);
  if (options.verify && !m.openvino_weights.empty()) {
    Manifest rest = m;
    rest.file_bytes.erase(m.openvino_weights);
    rest.file_sha256.erase(m.openvino_weights);
    verify_artifact_files(artifact_dir, rest, /*include_artifact=*/false);
  }
  const auto& in = m.inputs.front();
  if (in.dtype != "float32")
    throw Error("input '" + in.name + "' has dtype " + in.dtype + "; this runner feeds float32 only");
  ModelSource source;
  source.dir = artifact_dir;
  source.path = artifact_file_path(artifact_dir, m.artifact);  // missing, symlink out, FIFO/device: Error
  source.manifest = &m;
  // Each file a backend loads is read once here; its size and SHA-256 (manifest, signature) are checked on the bytes
  // the backend gets.
  auto read_checked = [&](const std::string& name, const std::string& path, uint64_t max_bytes) {
    const auto listed = m.file_bytes.find(name);
    if (options.verify && !m.file_sha256.count(name))
      throw Error("manifest in " + artifact_dir + " records no sha256 for '" + name + "' (integrity cannot be checked; "
                  "re-export it, or skip the check with verify = false / --no-verify)");
    std::string bytes = read_regular_file(path, max_bytes, "artifact file",
                                          options.verify && listed != m.file_bytes.end() ? listed->second : -1);
    if (options.verify || check_sig) {
      const std::string got = sha256_hex(bytes.data(), bytes.size());
      if (options.verify && got != m.file_sha256.at(name))
        throw Error("artifact file " + path + " does not match its manifest: sha256 " + got +
                    ", manifest records " + m.file_sha256.at(name) + " (corrupted or tampered with?)");
      const auto sig = signed_files.find(name);
      if (check_sig && (sig == signed_files.end() || got != sig->second))
        throw Error("artifact file " + path + " does not match its signature (altered after signing); refusing it");
    }
    return bytes;
  };
  // OpenVINO IR: the graph (XML, bounded) is checked to be IR before OpenVINO sees it (read_model would take any
  // frontend's format), and the weights file must be one the manifest lists (so its SHA-256 is checked).
  const bool openvino = m.target == "openvino";
  if (openvino && (m.artifact.size() < 4 || m.artifact.compare(m.artifact.size() - 4, 4, ".xml") != 0))
    throw Error(artifact_dir + ": OpenVINO artifact '" + m.artifact + "' is not an .xml IR");
  if (openvino && !m.file_bytes.empty() && !m.file_bytes.count(m.openvino_weights))
    throw Error(artifact_dir + ": OpenVINO weights '" + m.openvino_weights + "' are not listed in the manifest");
  source.bytes = read_checked(m.artifact, source.path, openvino ? kMaxOpenVinoXmlBytes : kMaxModelFileBytes);
  // Zip archives (TorchScript .pt, AOTInductor .pt2) are checked before libtorch reads (or extracts) them.
  if (m.target == "torchscript" || m.target == "aotinductor") check_zip_archive(source.bytes, source.path);
  if (m.target == "onnx") check_onnx_no_external_data(source.bytes, source.path);
  if (openvino) {
    check_openvino_ir(source.bytes, source.path);
    const std::string weights_path = artifact_file_path(artifact_dir, m.openvino_weights);
    source.files.emplace_back(m.openvino_weights, read_checked(m.openvino_weights, weights_path, kMaxModelFileBytes));
  }
  if (after_verify_hook_for_tests) after_verify_hook_for_tests(source.path);
  auto backend = row.make(source, options);
  std::unique_ptr<Runner> runner(new Runner(artifact_dir, std::move(m), options, std::move(backend)));
  if (options.warmup > 0) {
    const Tensor x = warmup_input(runner->manifest_);
    for (int i = 0; i < options.warmup; ++i) runner->run(x);
  }
  return runner;
}

std::vector<double> time_backend_loop(Runner& runner, const Tensor& input, int warmup, int iters) {
  runner.run(input);  // the Runner's checks once, so the bare loop gets a valid input
  return runner.backend_->time_native(input, warmup, iters);
}

std::vector<Tensor> Runner::run(const Tensor& input) const {
  const TensorSpec& spec = manifest_.inputs.front();
  bool ok = input.shape.size() == spec.shape.size();
  for (size_t i = 0; ok && i < spec.shape.size(); ++i)
    ok = input.shape[i] >= 1 && (spec.shape[i] < 0 || spec.shape[i] == input.shape[i]);
  if (!ok)
    throw Error("input shape " + shape_str(input.shape) + " does not match the artifact's input '" + spec.name +
                "' of shape " + spec_str(spec.shape) + " (\"any\" = dynamic)");
  if (static_cast<int64_t>(input.data.size()) != input.numel())
    throw Error("input tensor holds " + std::to_string(input.data.size()) + " values but its shape " +
                shape_str(input.shape) + " needs " + std::to_string(input.numel()));
  // A NaN/Inf input would give NaN logits silently (or a meaningless argmax): refuse it, naming the element.
  for (size_t i = 0; i < input.data.size(); ++i)
    if (!std::isfinite(input.data[i]))
      throw Error("input holds a non-finite value (" + std::string(std::isnan(input.data[i]) ? "NaN" : "Inf") +
                  ") at flat index " + std::to_string(i) + "; inputs must be finite float32");
  std::vector<Tensor> outputs = backend_->run(input);
  for (size_t i = 0; i < outputs.size(); ++i)
    outputs[i].name = i < manifest_.outputs.size() ? manifest_.outputs[i].name : "output_" + std::to_string(i);
  return outputs;
}

}  // namespace vitedge
