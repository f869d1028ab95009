// manifest.json parsing (schema in CONVENTIONS.md) with nlohmann::json.
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "vitedge/runner.h"

namespace vitedge {
namespace {

using nlohmann::json;

constexpr int kMaxSchemaVersion = 1;

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
    s.name = e.contains("name") && e["name"].is_string() ? e["name"].get<std::string>() : "";
    s.dtype = e.contains("dtype") && e["dtype"].is_string() ? e["dtype"].get<std::string>() : "float32";
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
  return v.get<float>();
}

Preprocessing parse_preprocessing(const json& p, const std::string& origin) {
  if (!p.is_object()) fail(origin, "\"preprocessing\" must be an object or null");
  Preprocessing out;
  const json& size = require(p, "size", " in preprocessing", origin);
  if (!size.is_array() || size.size() != 2 || !size[0].is_number_integer() || !size[1].is_number_integer() ||
      size[0].get<int64_t>() <= 0 || size[1].get<int64_t>() <= 0 || size[0].get<int64_t>() > 65536 ||
      size[1].get<int64_t>() > 65536)
    fail(origin, "preprocessing.size must be [H, W] with positive integers, got " + size.dump());
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
  if (p.contains("scale") && !p["scale"].is_null()) out.scale = get_float(p["scale"], "preprocessing.scale", origin);
  for (const char* key : {"mean", "std"}) {
    if (!p.contains(key) || p[key].is_null()) continue;
    const json& v = p[key];
    if (!v.is_array() || v.size() != 3) fail(origin, "preprocessing." + std::string(key) + " must be a list of 3 numbers");
    auto& dst = std::string(key) == "mean" ? out.mean : out.std;
    for (int c = 0; c < 3; ++c) dst[c] = get_float(v[c], "preprocessing." + std::string(key), origin);
  }
  for (float s : out.std)
    if (!(s != 0.f)) fail(origin, "preprocessing.std must be non-zero");
  if (out.layout != "NCHW") fail(origin, "preprocessing.layout '" + out.layout + "' is not supported (only NCHW)");
  if (out.color != "RGB") fail(origin, "preprocessing.color '" + out.color + "' is not supported (only RGB)");
  if (out.interpolation != "bilinear")
    fail(origin, "preprocessing.interpolation '" + out.interpolation + "' is not supported (only bilinear)");
  if (out.crop != "center") fail(origin, "preprocessing.crop '" + out.crop + "' is not supported (only center)");
  return out;
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
    m.schema_version = ver.get<int>();
    if (m.schema_version > kMaxSchemaVersion)
      throw Error("manifest " + origin + " has schema_version " + std::to_string(m.schema_version) +
                  ", but this vitedge runner reads schema_version <= " + std::to_string(kMaxSchemaVersion) +
                  " (rebuild the runner from a newer vitedge)");
    if (m.schema_version < 1) fail(origin, "schema_version must be >= 1");
    m.artifact = get_string(root, "artifact", "", origin);
    m.target = get_string(root, "target", "", origin);
    m.backend = get_string(root, "backend", "", origin);
    if (root.contains("precision") && root["precision"].is_string()) m.precision = root["precision"];
    m.inputs = parse_specs(root, "inputs", origin);
    m.outputs = parse_specs(root, "outputs", origin);
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
    if (root.contains("files") && !root["files"].is_null()) {
      const json& f = root["files"];
      if (!f.is_object()) fail(origin, "\"files\" must be an object {name: {sha256, bytes}}");
      for (auto it = f.begin(); it != f.end(); ++it) {
        int64_t bytes = -1;
        if (it.value().is_object() && it.value().contains("bytes") && it.value()["bytes"].is_number_integer())
          bytes = it.value()["bytes"].get<int64_t>();
        m.file_bytes[it.key()] = bytes;
      }
    }
    return m;
  } catch (const json::exception& e) {  // a type mismatch we did not check explicitly
    fail(origin, e.what());
  }
}

Manifest read_manifest(const std::string& artifact_dir) {
  const std::string path = artifact_dir + "/manifest.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path + " (is '" + artifact_dir + "' a vitedge artifact directory?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_manifest(ss.str(), path);
}

}  // namespace vitedge
