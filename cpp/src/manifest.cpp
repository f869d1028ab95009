// manifest.json parsing with nlohmann::json. The bounds are those of the manifest's JSON Schema
// (vitedge/schemas/manifest.schema.json, installed as share/vitedge/manifest.schema.json), checked by hand here (no
// C++ schema validator dependency); cpp/tests/schema_corpus.py (ctest cpp_schema_corpus) checks that the runner and
// the schema refuse the same hostile manifests.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <fstream>
#include <sstream>
#include <filesystem>
#include <system_error>

#include <nlohmann/json.hpp>

#include "artifact_io.h"
#include "vitedge/runner.h"

namespace vitedge {
namespace {

using nlohmann::json;

constexpr int kMaxSchemaVersion = 1;
constexpr int64_t kMaxInputSide = 8192;  // largest C, H or W of the input and preprocessing.size (the schema's bound)
const char* const kDtypes[] = {"float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"};

[[noreturn]] void fail(const std::string& origin, const std::string& what) {
  throw Error("invalid manifest " + origin + ": " + what);
}

const json& require(const json& obj, const char* key, const std::string& where, const std::string& origin) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) fail(origin, "missing \"" + std::string(key) + "\"" + where);
  return *it;
}

std::string get_string(const json& obj, const char* key, const std::string& where, const std::string& origin) {
  const json& v = require(obj, key, where, origin);
  if (!v.is_string()) fail(origin, "\"" + std::string(key) + "\"" + where + " must be a string");
  return v.get<std::string>();
}

std::vector<TensorSpec> parse_specs(const json& root, const char* key, const std::string& origin) {
  const json& arr = require(root, key, "", origin);
  if (!arr.is_array() || arr.empty()) fail(origin, "\"" + std::string(key) + "\" must be a non-empty list");
  std::vector<TensorSpec> specs;
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string where = " in " + std::string(key) + "[" + std::to_string(i) + "]";
    const json& e = arr[i];
    if (!e.is_object()) fail(origin, "entry" + where + " must be an object");
    TensorSpec s;
    s.name = get_string(e, "name", where, origin);
    s.dtype = get_string(e, "dtype", where, origin);
    bool known = false;
    for (const char* d : kDtypes) known = known || s.dtype == d;
    if (!known) fail(origin, "\"dtype\"" + where + " '" + s.dtype.substr(0, 40) + "' is not a tensor dtype vitedge writes");
    const json& shape = require(e, "shape", where, origin);
    if (!shape.is_array()) fail(origin, "\"shape\"" + where + " must be a list of integers");
    for (const json& d : shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < -1 || d.get<int64_t>() == 0)
        fail(origin, "\"shape\"" + where + " must hold positive integers or -1 (dynamic), got " + shape.dump());
      s.shape.push_back(d.get<int64_t>());
    }
    specs.push_back(std::move(s));
  }
  return specs;
}

float get_float(const json& v, const std::string& what, const std::string& origin) {
  if (!v.is_number()) fail(origin, what + " must be a number");
  const double d = v.get<double>();  // a float32 must hold it: finite and within float range
  if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max())
    fail(origin, what + " must be a finite float32 number");
  return static_cast<float>(d);
}

Preprocessing parse_preprocessing(const json& p, const std::string& origin) {
  if (!p.is_object()) fail(origin, "\"preprocessing\" must be an object or null");
  Preprocessing out;
  const json& size = require(p, "size", " in preprocessing", origin);
  if (!size.is_array() || size.size() != 2 || !size[0].is_number_integer() || !size[1].is_number_integer() ||
      size[0].get<int64_t>() <= 0 || size[1].get<int64_t>() <= 0 || size[0].get<int64_t>() > kMaxInputSide ||
      size[1].get<int64_t>() > kMaxInputSide)
    fail(origin, "preprocessing.size must be [H, W] with positive integers <= 8192, got " + size.dump());
  out.height = size[0].get<int>();
  out.width = size[1].get<int>();
  auto opt_string = [&](const char* key, std::string& dst) {
    if (p.contains(key) && !p[key].is_null()) {
      if (!p[key].is_string()) fail(origin, "preprocessing." + std::string(key) + " must be a string");
      dst = p[key].get<std::string>();
    }
  };
  opt_string("resize", out.resize);
  opt_string("crop", out.crop);
  opt_string("interpolation", out.interpolation);
  opt_string("layout", out.layout);
  opt_string("color", out.color);
  out.scale = get_float(require(p, "scale", " in preprocessing", origin), "preprocessing.scale", origin);
  if (!(out.scale > 0.f)) fail(origin, "preprocessing.scale must be positive");
  for (const char* key : {"mean", "std"}) {
    const json& v = require(p, key, " in preprocessing", origin);
    if (!v.is_array() || (v.size() != 3 && v.size() != 1))
      fail(origin, "preprocessing." + std::string(key) + " must be a list of 1 or 3 numbers");
    auto& dst = std::string(key) == "mean" ? out.mean : out.std;
    for (size_t c = 0; c < 3; ++c) dst[c] = get_float(v[v.size() == 1 ? 0 : c], "preprocessing." + std::string(key), origin);
  }
  for (float s : out.std)
    if (!(s > 0.f)) fail(origin, "preprocessing.std must be positive (non-zero: it divides)");
  if (out.layout != "NCHW") fail(origin, "preprocessing.layout '" + out.layout + "' is not supported (only NCHW)");
  if (out.color != "RGB") fail(origin, "preprocessing.color '" + out.color + "' is not supported (only RGB)");
  if (out.interpolation != "bilinear")
    fail(origin, "preprocessing.interpolation '" + out.interpolation + "' is not supported (only bilinear)");
  if (out.crop != "center") fail(origin, "preprocessing.crop '" + out.crop + "' is not supported (only center)");
  return out;
}

// A file name from the manifest must stay inside the artifact directory: relative, no ".." component,
// no NUL byte (std::filesystem would truncate at it), no backslash, no drive ("C:x"), not "." or "./", at most 255
// bytes a part and 1024 in all (vitedge/safety.py check_relative_name; the schema's relative_name). Sub-directories
// are allowed.
void check_inside(const std::string& name, const std::string& what, const std::string& origin) {
  if (name.empty() || name == "." || name == "./") fail(origin, what + " must not be empty (or '.')");
  if (name.find('\0') != std::string::npos) fail(origin, what + " contains a NUL byte");
  if (name.front() == '/' || name.front() == '\\')
    fail(origin, what + " '" + name + "' is absolute; it must be a file inside the artifact directory");
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find_first_of("/\\", start);
    if (end == std::string::npos) end = name.size();
    if (name.compare(start, end - start, "..") == 0)
      fail(origin, what + " '" + name + "' leaves the artifact directory (\"..\" component)");
    if (end - start > 255) fail(origin, what + " has a part longer than 255 bytes");
    start = end + 1;
  }
  if (name.find('\\') != std::string::npos) fail(origin, what + " '" + name.substr(0, 200) + "' holds a backslash");
  if (name.size() > 1 && name[1] == ':') fail(origin, what + " '" + name.substr(0, 200) + "' is absolute (a drive)");
  if (name.size() > 1024) fail(origin, what + " is longer than 1024 bytes");
}

// ONNX Runtime session config entries vitedge writes (vitedge/targets/onnx.py SESSION_CONFIG,
// vitedge/quantize/onnx.py SESSION_CONFIG_FOLD_WEIGHTS); each value "0" or "1". Same list as the Python loader.
const char* const kOrtSessionKeys[] = {"session.intra_op.allow_spinning", "session.inter_op.allow_spinning",
                                       "session.disable_quant_qdq"};
const char* const kOrtLevels[] = {"ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"};

// A manifest string as it may appear in a one-line message: control bytes shown as '?', at most 200 bytes.
std::string one_line(const std::string& s) {
  std::string out = s.substr(0, 200);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s.size() > 200 ? out + "..." : out;
}

void parse_session_config(const json& block, const std::string& where, const std::string& origin, Manifest& m) {
  const auto sc = block.find("session_config");
  if (sc == block.end() || sc->is_null()) return;
  if (!sc->is_object()) fail(origin, where + ".session_config must be an object");
  for (const auto& [key, value] : sc->items()) {
    bool known = false;
    for (const char* k : kOrtSessionKeys) known = known || key == k;
    if (!known)
      throw Error("manifest " + origin + ": " + where + ".session_config key '" + one_line(key) +
                  "' is not one vitedge writes; refusing it");
    if (!value.is_string() || (value.get<std::string>() != "0" && value.get<std::string>() != "1"))
      throw Error("manifest " + origin + ": " + where + ".session_config['" + one_line(key) + "'] must be \"0\" or \"1\", got " +
                  value.dump());
    auto it = std::find_if(m.ort_session_config.begin(), m.ort_session_config.end(),
                           [&key = key](const auto& kv) { return kv.first == key; });
    if (it != m.ort_session_config.end()) it->second = value.get<std::string>();
    else m.ort_session_config.emplace_back(key, value.get<std::string>());
  }
}

// OpenVINO compile properties a manifest may carry (vitedge/targets/openvino.py _ALLOWED_CONFIG, same list): each
// key with its allowed values. Anything else reaching Core::compile_model (CACHE_DIR writes files, ...) is refused.
struct OvAllowed {
  const char* key;
  std::vector<const char*> values;
};
const std::vector<OvAllowed>& ov_allowed() {
  static const std::vector<OvAllowed> rows = {{"PERFORMANCE_HINT", {"LATENCY", "THROUGHPUT"}},
                                              {"INFERENCE_PRECISION_HINT", {"f32", "bf16", "f16"}},
                                              {"EXECUTION_MODE_HINT", {"PERFORMANCE", "ACCURACY"}}};
  return rows;
}

// The "openvino" block of an OpenVINO artifact (read for target "openvino" only, as the Python loader does).
void parse_openvino(const json& root, const std::string& origin, Manifest& m) {
  if (m.target != "openvino") return;
  const auto it = root.find("openvino");
  const bool present = it != root.end() && !it->is_null();
  if (present && !it->is_object()) fail(origin, "\"openvino\" must be an object");
  if (present && it->contains("config")) {
    const json& c = (*it)["config"];
    if (!c.is_object()) fail(origin, "openvino.config is not a mapping");
    std::vector<std::pair<std::string, std::string>> config;
    for (const auto& [key, value] : c.items()) {
      const OvAllowed* row = nullptr;
      for (const auto& r : ov_allowed())
        if (key == r.key) row = &r;
      bool ok = row != nullptr && value.is_string();
      if (ok) {
        ok = false;
        for (const char* v : row->values) ok = ok || value.get<std::string>() == v;
      }
      if (!ok)
        throw Error("manifest " + origin + ": openvino config " + one_line(key) + "=" + one_line(value.dump()) +
                    " is not one vitedge applies (known: PERFORMANCE_HINT LATENCY|THROUGHPUT, "
                    "INFERENCE_PRECISION_HINT f32|bf16|f16, EXECUTION_MODE_HINT PERFORMANCE|ACCURACY)");
      config.emplace_back(key, value.get<std::string>());
    }
    m.openvino_config = std::move(config);
  }
  std::string weights;
  if (present && it->contains("weights") && !(*it)["weights"].is_null()) {
    const json& w = (*it)["weights"];
    if (!w.is_string()) fail(origin, "openvino.weights must be a file name (a string)");
    weights = w.get<std::string>();
  }
  if (!weights.empty()) {
    check_inside(weights, "openvino.weights", origin);
  } else {  // absent or "": the artifact's name with ".bin"
    const std::string file = m.artifact.substr(m.artifact.find_last_of('/') + 1);
    const auto dot = file.rfind('.');
    weights = (dot == std::string::npos || dot == 0 ? file : file.substr(0, dot)) + ".bin";
  }
  if (weights.find('\\') != std::string::npos)
    fail(origin, "openvino.weights '" + one_line(weights) + "' holds a backslash");
  // folder of "artifact" + weights, "." and empty components dropped (as Python's PurePosixPath joins them)
  const auto slash = m.artifact.find_last_of('/');
  const std::string joined = (slash == std::string::npos ? "" : m.artifact.substr(0, slash + 1)) + weights;
  std::string norm;
  size_t start = 0;
  while (start <= joined.size()) {
    size_t end = joined.find('/', start);
    if (end == std::string::npos) end = joined.size();
    const std::string part = joined.substr(start, end - start);
    if (!part.empty() && part != ".") norm += (norm.empty() ? "" : "/") + part;
    start = end + 1;
  }
  m.openvino_weights = norm;
}

bool is_sha256_hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

Manifest parse_manifest(const std::string& json_text, const std::string& origin) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    fail(origin, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!root.is_object()) fail(origin, "top level must be a JSON object");
  try {
    Manifest m;
    const json& ver = require(root, "schema_version", "", origin);
    if (!ver.is_number_integer()) fail(origin, "\"schema_version\" must be an integer");
    // Compared as int64 (an unsigned or huge value must not wrap around to 1 through a cast to int).
    const int64_t version = ver.is_number_unsigned() && ver.get<uint64_t>() > INT64_MAX ? INT64_MAX : ver.get<int64_t>();
    if (version > kMaxSchemaVersion)
      throw Error("manifest " + origin + " has schema_version " + ver.dump() +
                  ", but this vitedge runner reads schema_version <= " + std::to_string(kMaxSchemaVersion) +
                  " (rebuild the runner from a newer vitedge)");
    if (version < 1) fail(origin, "schema_version must be >= 1");
    m.schema_version = static_cast<int>(version);
    m.artifact = get_string(root, "artifact", "", origin);
    check_inside(m.artifact, "\"artifact\"", origin);
    m.target = get_string(root, "target", "", origin);
    if (m.target.empty()) fail(origin, "\"target\" must not be empty");
    // "backend" is optional (empty: the target's backend, as the Python loader picks it by target)
    if (root.contains("backend") && !root["backend"].is_null()) m.backend = get_string(root, "backend", "", origin);
    if (root.contains("precision") && !root["precision"].is_null()) m.precision = get_string(root, "precision", "", origin);
    m.inputs = parse_specs(root, "inputs", origin);
    m.outputs = parse_specs(root, "outputs", origin);
    // An image input (B, C, H, W): C, H, W of at most 8192. (The schema and the Python reader also require the
    // first input to be 4-D with fixed C, H, W; the runner still runs other graphs, whose input shape the runtime
    // checks: cpp_bad_inputs uses such graphs.)
    {
      const auto& shape = m.inputs.front().shape;
      for (size_t i = 1; shape.size() == 4 && i < 4; ++i)
        if (shape[i] > kMaxInputSide) fail(origin, "the input shape has C, H or W above 8192");
    }
    if (root.contains("preprocessing") && !root["preprocessing"].is_null())
      m.preprocessing = parse_preprocessing(root["preprocessing"], origin);
    if (root.contains("labels") && !root["labels"].is_null()) {
      const json& l = root["labels"];
      if (!l.is_array()) fail(origin, "\"labels\" must be a list of strings or null");
      for (const json& s : l) {
        if (!s.is_string()) fail(origin, "\"labels\" must be a list of strings or null");
        m.labels.push_back(s.get<std::string>());
      }
    }
    // preprocessing.size must be the input's fixed (H, W): a huge size on a small model would only allocate.
    if (m.preprocessing && m.inputs.front().shape.size() == 4) {
      const auto& shape = m.inputs.front().shape;
      if ((shape[2] > 0 && shape[2] != m.preprocessing->height) || (shape[3] > 0 && shape[3] != m.preprocessing->width))
        fail(origin, "preprocessing.size [" + std::to_string(m.preprocessing->height) + ", " +
                     std::to_string(m.preprocessing->width) + "] differs from the input's (H, W) = (" +
                     std::to_string(shape[2]) + ", " + std::to_string(shape[3]) + ")");
    }
    // ONNX Runtime settings: onnxruntime.{graph_optimization_level, session_config}, then the older
    // quantization.session_config (it wins on a shared key), allow-listed.
    if (root.contains("onnxruntime") && !root["onnxruntime"].is_null()) {
      const json& o = root["onnxruntime"];
      if (!o.is_object()) fail(origin, "\"onnxruntime\" must be an object");
      parse_session_config(o, "onnxruntime", origin, m);
      if (o.contains("graph_optimization_level") && !o["graph_optimization_level"].is_null()) {
        const json& lv = o["graph_optimization_level"];
        bool known = false;
        for (const char* l : kOrtLevels) known = known || (lv.is_string() && lv.get<std::string>() == l);
        if (!known)
          fail(origin, "onnxruntime.graph_optimization_level must be one of ORT_DISABLE_ALL, ORT_ENABLE_BASIC, "
                       "ORT_ENABLE_EXTENDED, ORT_ENABLE_ALL");
        m.ort_graph_optimization_level = lv.get<std::string>();
      }
    }
    if (root.contains("quantization") && !root["quantization"].is_null()) {
      if (!root["quantization"].is_object()) fail(origin, "\"quantization\" must be an object or null");
      parse_session_config(root["quantization"], "quantization", origin, m);
    }
    parse_openvino(root, origin, m);
    if (root.contains("files") && !root["files"].is_null()) {
      const json& f = root["files"];
      if (!f.is_object()) fail(origin, "\"files\" must be an object {name: {sha256, bytes}}");
      for (auto it = f.begin(); it != f.end(); ++it) {
        const std::string where = "files[\"" + it.key() + "\"]";
        check_inside(it.key(), "file name " + where, origin);
        if (it.key() == "manifest.json") fail(origin, "\"files\" lists manifest.json itself");
        const json& e = it.value();
        // Both fields, as vitedge writes them (the schema's files entry): sha256 = 64 lower-case hex digits.
        if (!e.is_object()) fail(origin, where + " must be an object {sha256, bytes}");
        const json& b = require(e, "bytes", " in " + where, origin);
        if (!b.is_number_integer() || (b.is_number_unsigned() ? false : b.get<int64_t>() < 0) ||
            (b.is_number_unsigned() && b.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)))
          fail(origin, where + ".bytes must be a non-negative integer");
        m.file_bytes[it.key()] = b.get<int64_t>();
        const auto h = e.find("sha256");
        if (h == e.end() || h->is_null())
          fail(origin, where + " is listed without a sha256 (the manifest records no sha256 for '" +
                           one_line(it.key()) + "')");
        if (!h->is_string() || !is_sha256_hex(h->get<std::string>()))
          fail(origin, where + ".sha256 must be 64 hex digits (lower-case)");
        m.file_sha256[it.key()] = h->get<std::string>();
      }
    }
    return m;
  } catch (const json::exception& e) {  // a type mismatch we did not check explicitly
    fail(origin, e.what());
  }
}

Manifest read_manifest(const std::string& artifact) {
  const ArtifactLocation where = locate_artifact(artifact);  // the folder, or the model file in it
  const std::string path = where.dir + "/manifest.json";
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(path, ec)))
    throw Error("cannot open " + path + " (is '" + where.dir + "' a vitedge artifact directory?)");
  // Size and file type are checked on the open descriptor before a byte is read (a FIFO cannot hang it).
  Manifest m = parse_manifest(read_regular_file(path, kMaxManifestBytes, "manifest"), path);
  check_artifact_file(where, m, path);
  return m;
}

}  // namespace vitedge
