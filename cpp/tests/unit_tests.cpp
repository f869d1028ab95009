// Unit tests for the statistics helpers and the manifest parser. No framework: CHECK macros, exit code = failures.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>

#include <sys/stat.h>

#include "artifact_io.h"  // internal (src/): read-once file reading, zip and ONNX checks
#include "sha256.h"       // internal (src/): SHA-256 and the artifact integrity check
#include "signature.h"    // internal (src/): model.sig verification
#include "vitedge/runner.h"
#include "check.h"

namespace {

using vitedge_test::failures;

#define CHECK_NEAR(a, b, tol)                                                                            \
  do {                                                                                                   \
    const double va_ = (a), vb_ = (b);                                                                   \
    if (!(std::fabs(va_ - vb_) <= (tol))) {                                                              \
      ++failures;                                                                                        \
      std::cerr << __FILE__ << ":" << __LINE__ << ": " #a " = " << va_ << ", expected " << vb_ << "\n"; \
    }                                                                                                    \
  } while (0)


void test_percentile() {
  // Reference values from numpy.percentile (method="linear").
  const std::vector<double> v{15, 20, 35, 40, 50};
  CHECK_NEAR(vitedge::percentile(v, 0), 15, 1e-12);
  CHECK_NEAR(vitedge::percentile(v, 100), 50, 1e-12);
  CHECK_NEAR(vitedge::percentile(v, 50), 35, 1e-12);
  CHECK_NEAR(vitedge::percentile(v, 40), 29, 1e-12);   // rank 1.6 -> 20 + 0.6 * 15
  CHECK_NEAR(vitedge::percentile(v, 90), 46, 1e-12);   // rank 3.6 -> 40 + 0.6 * 10
  CHECK_NEAR(vitedge::percentile(v, 99), 49.6, 1e-12);
  CHECK_NEAR(vitedge::percentile({3, 1, 2, 4}, 50), 2.5, 1e-12);  // unsorted input, even count
  CHECK_NEAR(vitedge::percentile({7}, 99), 7, 1e-12);
  CHECK_NEAR(vitedge::percentile({1, 2}, 25), 1.25, 1e-12);
  CHECK_THROWS(vitedge::percentile({}, 50), "empty");
  CHECK_THROWS(vitedge::percentile({1}, 101), "[0, 100]");
  CHECK_THROWS(vitedge::percentile({1}, -1), "[0, 100]");

  std::vector<double> xs;
  for (int i = 1; i <= 10; ++i) xs.push_back(i);
  const vitedge::Stats s = vitedge::summarize(xs);
  CHECK_NEAR(s.mean, 5.5, 1e-12);
  CHECK_NEAR(s.p50, 5.5, 1e-12);
  CHECK_NEAR(s.p90, 9.1, 1e-12);
  CHECK_NEAR(s.p99, 9.91, 1e-12);
  CHECK_NEAR(s.min, 1, 0);
  CHECK_NEAR(s.max, 10, 0);
  CHECK_THROWS(vitedge::summarize({}), "empty");
}

const char* kGood = R"({
  "schema_version": 1, "artifact": "model.pt", "target": "torchscript", "backend": "libtorch", "precision": "fp32",
  "model": {"preset": null, "class": "vitedge.models.vit.ViT", "kwargs": {"dim": 64}},
  "inputs":  [{"name": "pixel_values", "shape": [-1, 3, 64, 48], "dtype": "float32", "dynamic_axes": {"0": "batch"}}],
  "outputs": [{"name": "logits", "shape": [-1, 10], "dtype": "float32", "dynamic_axes": {"0": "batch"}}],
  "preprocessing": {"size": [64, 48], "resize": "shorter_side", "crop": "center", "interpolation": "bilinear",
                    "scale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                    "layout": "NCHW", "color": "RGB"},
  "labels": ["a", "b"],
  "files": {"model.pt": {"sha256": "abababababababababababababababababababababababababababababababab", "bytes": 1234}},
  "versions": {"vitedge": "0.1.0"}, "created": "2026-11-23T14:00:00Z", "export": {}, "parity": {},
  "future_field": [1, 2, 3]
})";

std::string replace(std::string s, const std::string& from, const std::string& to) {
  const auto pos = s.find(from);
  if (pos == std::string::npos) {
    ++failures;
    std::cerr << "test bug: '" << from << "' not in the sample manifest\n";
    return s;
  }
  return s.replace(pos, from.size(), to);
}

void test_manifest() {
  const vitedge::Manifest m = vitedge::parse_manifest(kGood);
  CHECK(m.schema_version == 1);
  CHECK(m.artifact == "model.pt");
  CHECK(m.target == "torchscript");
  CHECK(m.backend == "libtorch");
  CHECK(m.precision == "fp32");
  CHECK(m.inputs.size() == 1 && m.outputs.size() == 1);
  CHECK(m.inputs[0].name == "pixel_values");
  CHECK((m.inputs[0].shape == std::vector<int64_t>{-1, 3, 64, 48}));
  CHECK((m.outputs[0].shape == std::vector<int64_t>{-1, 10}));
  CHECK(m.preprocessing.has_value());
  CHECK(m.preprocessing->height == 64 && m.preprocessing->width == 48);
  CHECK(m.preprocessing->scale == static_cast<float>(0.00392156862745098));
  CHECK(m.preprocessing->mean[2] == 0.406f && m.preprocessing->std[0] == 0.229f);
  CHECK((m.labels == std::vector<std::string>{"a", "b"}));
  CHECK(m.file_bytes.count("model.pt") && m.file_bytes.at("model.pt") == 1234);
  CHECK(m.file_sha256.count("model.pt") &&
        m.file_sha256.at("model.pt") == "abababababababababababababababababababababababababababababababab");  // lower-cased

  // Optional blocks may be null.
  const auto m2 = vitedge::parse_manifest(
      replace(replace(std::string(kGood), "\"labels\": [\"a\", \"b\"]", "\"labels\": null"),
              "\"files\": {\"model.pt\": {\"sha256\": \"abababababababababababababababababababababababababababababababab\", \"bytes\": 1234}}",
              "\"files\": null"));
  CHECK(m2.labels.empty() && m2.file_bytes.empty() && m2.file_sha256.empty());
  // The schema's bounds (vitedge/schemas/manifest.schema.json), as the Python reader applies them.
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "abababababababababababababababababababababababababababababababab",
                                               "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB")),
               "64 hex digits (lower-case)");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, ", \"bytes\": 1234", "")), "missing \"bytes\"");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"model.pt\": {\"sha256\"", "\"manifest.json\": {\"sha256\"")),
               "lists manifest.json itself");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"artifact\": \"model.pt\"", "\"artifact\": \"C:model.pt\"")), "a drive");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"artifact\": \"model.pt\"", "\"artifact\": \"a\\\\b.pt\"")), "backslash");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"artifact\": \"model.pt\"", "\"artifact\": \"./\"")), "must not be empty");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "[0.229, 0.224, 0.225]", "[0.229, -1, 0.225]")), "positive");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"scale\": 0.00392156862745098", "\"scale\": 0")), "positive");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "[-1, 3, 64, 48]", "[-1, 3, 9000, 48]")), "above 8192");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"dtype\": \"float32\"", "\"dtype\": \"gloat32\"")), "dtype");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"precision\": \"fp32\"", "\"precision\": 5")), "precision");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"future_field\"", "\"quantization\": 5, \"future_field\"")),
               "\"quantization\" must be an object");
  CHECK(vitedge::parse_manifest(replace(kGood, "[0.485, 0.456, 0.406]", "[0.5]")).preprocessing->mean[2] == 0.5f);
  CHECK(vitedge::parse_manifest(replace(kGood, "\"backend\": \"libtorch\", ", "")).backend.empty());

  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"schema_version\": 1", "\"schema_version\": 99")),
               "schema_version 99");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"schema_version\": 1", "\"schema_version\": 4294967297")),
               "schema_version 4294967297");  // 2^32 + 1: must not wrap to 1
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"schema_version\": 1", "\"schema_version\": 18446744073709551615")),
               "schema_version 18446744073709551615");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"schema_version\": 1", "\"schema_version\": -3")), ">= 1");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"scale\": 0.00392156862745098", "\"scale\": 1e300")),
               "finite float32");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"schema_version\": 1,", "")), "missing \"schema_version\"");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"schema_version\": 1", "\"schema_version\": \"1\"")),
               "must be an integer");
  CHECK_THROWS(vitedge::parse_manifest("{not json", "x/manifest.json"), "x/manifest.json: not valid JSON");
  CHECK_THROWS(vitedge::parse_manifest("[]"), "must be a JSON object");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"artifact\": \"model.pt\",", "")), "missing \"artifact\"");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"target\": \"torchscript\"", "\"target\": 3")),
               "\"target\" must be a string");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "[-1, 3, 64, 48]", "[-1, 3, 0, 48]")), "positive integers");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "[-1, 3, 64, 48]", "\"big\"")), "list of integers");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"size\": [64, 48]", "\"size\": [64]")), "preprocessing.size");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "[0.229, 0.224, 0.225]", "[0.229, 0, 0.225]")), "non-zero");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"layout\": \"NCHW\"", "\"layout\": \"NHWC\"")), "NHWC");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"outputs\": [", "\"outputs\": [], \"x\": [")), "non-empty");

  // File names must stay inside the artifact directory; digests must be 64 hex digits.
  const std::string sha = "\"abababababababababababababababababababababababababababababababab\"";
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"model.pt\": {\"sha256\"", "\"../model.pt\": {\"sha256\"")),
               "leaves the artifact directory");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"model.pt\": {\"sha256\"", "\"sub/../../x\": {\"sha256\"")),
               "leaves the artifact directory");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"model.pt\": {\"sha256\"", "\"/etc/passwd\": {\"sha256\"")),
               "is absolute");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"artifact\": \"model.pt\"", "\"artifact\": \"..\\\\m.pt\"")),
               "leaves the artifact directory");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"artifact\": \"model.pt\"", "\"artifact\": \"\"")),
               "must not be empty");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, sha, "\"abc\"")), "64 hex digits");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, sha, "12")), "64 hex digits");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"bytes\": 1234", "\"bytes\": -5")), "non-negative");
  CHECK(vitedge::parse_manifest(replace(kGood, "\"model.pt\": {\"sha256\"", "\"sub/..x.bin\": {\"sha256\""))
            .file_sha256.count("sub/..x.bin") == 1);  // ".." inside a name is not a parent reference

  // Issue 17: preprocessing.size must be the input's fixed (H, W); ORT session config is allow-listed.
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"size\": [64, 48]", "\"size\": [8192, 8192]")),
               "preprocessing.size [8192, 8192] differs from the input's (H, W) = (64, 48)");
  const std::string ort_block = "\"future_field\": [1, 2, 3], \"onnxruntime\": {\"graph_optimization_level\": "
                                "\"ORT_ENABLE_BASIC\", \"session_config\": {\"session.intra_op.allow_spinning\": \"0\", "
                                "\"session.inter_op.allow_spinning\": \"1\"}}, \"quantization\": {\"session_config\": "
                                "{\"session.disable_quant_qdq\": \"1\", \"session.intra_op.allow_spinning\": \"1\"}}";
  {
    const auto mo = vitedge::parse_manifest(replace(kGood, "\"future_field\": [1, 2, 3]", ort_block));
    CHECK(mo.ort_graph_optimization_level == "ORT_ENABLE_BASIC");
    auto cfg = mo.ort_session_config;
    std::sort(cfg.begin(), cfg.end());
    CHECK((cfg == std::vector<std::pair<std::string, std::string>>{
              {"session.disable_quant_qdq", "1"}, {"session.inter_op.allow_spinning", "1"},
              {"session.intra_op.allow_spinning", "1"}}));  // quantization's value wins on a shared key
  }
  for (const char* key : {"session.optimized_model_filepath", "session.collect_node_memory_stats_to_file",
                          "session.enable_profiling", "session.load_model_format"})
    CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"future_field\": [1, 2, 3]",
                                                 std::string("\"onnxruntime\": {\"session_config\": {\"") + key +
                                                     "\": \"/tmp/x\"}}")),
                 std::string("onnxruntime.session_config key '") + key + "' is not one vitedge writes; refusing it");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"future_field\": [1, 2, 3]",
                                               "\"quantization\": {\"session_config\": {\"session.x\": \"1\"}}")),
               "quantization.session_config key 'session.x' is not one vitedge writes");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"future_field\": [1, 2, 3]",
                                               "\"onnxruntime\": {\"session_config\": {\"session.disable_quant_qdq\": 1}}")),
               "must be \"0\" or \"1\"");
  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"future_field\": [1, 2, 3]",
                                               "\"onnxruntime\": {\"graph_optimization_level\": \"FAST\"}")),
               "graph_optimization_level must be one of");

  // Opening: a missing directory and an unsupported backend are clear errors.
  CHECK_THROWS(vitedge::Runner::open("/nonexistent/vitedge-artifact"), "does not exist");
  CHECK_THROWS(vitedge::read_manifest("/nonexistent/vitedge-artifact"), "does not exist");
}

// The path a user gives: the artifact folder or the model file in it (locate_artifact, the rule of
// vitedge/manifest.py artifact_folder); anything else is refused naming the path as given.
void test_artifact_location() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("vitedge_unit_loc_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "art");
  fs::create_directories(dir / "elsewhere");
  const std::string art = (dir / "art").string();
  { std::ofstream(dir / "art" / "manifest.json") << "{}"; }
  { std::ofstream(dir / "art" / "model.onnx") << "x"; }
  { std::ofstream(dir / "art" / "notes.txt") << "x"; }
  { std::ofstream(dir / "elsewhere" / "model.onnx") << "x"; }
  vitedge::ArtifactLocation loc = vitedge::locate_artifact(art);
  CHECK(loc.dir == art && loc.file.empty());
  loc = vitedge::locate_artifact(art + "/model.onnx");
  CHECK(loc.dir == art && loc.file == art + "/model.onnx" && loc.file_name == "model.onnx");
  loc = vitedge::locate_artifact(art + "/model.onnx/");  // Python's pathlib drops the trailing slash: so do we
  CHECK(loc.dir == art && loc.file == art + "/model.onnx/" && loc.file_name == "model.onnx");
  vitedge::Manifest m;
  m.artifact = "model.onnx";
  vitedge::check_artifact_file(loc, m, art + "/manifest.json");
  m.artifact = "./model.onnx";  // the same file, as Python's PurePosixPath compares names
  vitedge::check_artifact_file(loc, m, art + "/manifest.json");
  m.artifact = "sub/model.onnx";
  CHECK_THROWS(vitedge::check_artifact_file(loc, m, art + "/manifest.json"),
               "model.onnx/' is a file but not the model file of an artifact (its " + art + "/manifest.json names "
               "'sub/model.onnx'; give the folder '" + art + "' or that file)");
  m.artifact = "model.xml";
  CHECK_THROWS(vitedge::check_artifact_file(vitedge::locate_artifact(art + "/notes.txt"), m, "M"),
               "'" + art + "/notes.txt' is a file but not the model file of an artifact (its M names 'model.xml'");
  vitedge::check_artifact_file(vitedge::locate_artifact(art), m, "M");  // a folder: nothing to compare
  CHECK_THROWS(vitedge::locate_artifact(art + "/manifest.json"),
               "'" + art + "/manifest.json' is a file but not the model file of an artifact (it is the manifest; "
               "give its folder '" + art + "'");
  CHECK_THROWS(vitedge::locate_artifact((dir / "elsewhere" / "model.onnx").string()),
               "elsewhere/model.onnx' is a file but not the model file of an artifact (no manifest.json beside it)");
  CHECK_THROWS(vitedge::locate_artifact(art + "/nope.onnx"), "artifact '" + art + "/nope.onnx' does not exist");
  CHECK_THROWS(vitedge::locate_artifact(""), "artifact path is empty");
  CHECK(::mkfifo((dir / "art" / "fifo").c_str(), 0600) == 0);
  CHECK_THROWS(vitedge::locate_artifact(art + "/fifo"), "is neither an artifact folder nor a model file");
  // A symlink to the model file stands for the folder the link is in (as Python's Path.parent): from elsewhere,
  // there is no manifest.json beside it. A symlink to the folder is the folder.
  fs::create_symlink(dir / "art" / "model.onnx", dir / "elsewhere" / "link.onnx");
  CHECK_THROWS(vitedge::locate_artifact((dir / "elsewhere" / "link.onnx").string()), "no manifest.json beside it");
  fs::create_symlink(dir / "art", dir / "artlink");
  CHECK(vitedge::locate_artifact((dir / "artlink").string()).dir == (dir / "artlink").string());
  CHECK(vitedge::locate_artifact((dir / "artlink" / "model.onnx").string()).dir == (dir / "artlink").string());
  // A bare file name: the folder is ".".
  const fs::path cwd = fs::current_path();
  fs::current_path(dir / "art");
  CHECK(vitedge::locate_artifact("model.onnx").dir == ".");
  fs::current_path(cwd);
  // Runner::open and read_manifest apply it (the refusals come before any manifest is read).
  CHECK_THROWS(vitedge::Runner::open(art + "/manifest.json"), "(it is the manifest");
  CHECK_THROWS(vitedge::read_manifest((dir / "elsewhere" / "model.onnx").string()), "no manifest.json beside it");
  fs::remove_all(dir);
}

// FIPS 180-4 / NIST CSRC "SHA256.pdf" example vectors, plus the empty message.
void test_sha256() {
  auto hex = [](const std::string& s) { return vitedge::sha256_hex(s.data(), s.size()); };
  CHECK(hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(hex(std::string(1000000, 'a')) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

  // A file over the 1 MiB read block gives the same digest as the bytes in memory.
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("vitedge_unit_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string big(3 * (1 << 20) + 17, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  { std::ofstream(dir / "model.pt", std::ios::binary) << big; }
  { std::ofstream(dir / "extra.bin", std::ios::binary) << "abc"; }
  CHECK(vitedge::sha256_file_hex((dir / "model.pt").string()) == hex(big));
  CHECK_THROWS(vitedge::sha256_file_hex((dir / "nope").string()), "cannot open");

  vitedge::Manifest m;
  m.artifact = "model.pt";
  m.file_bytes = {{"model.pt", static_cast<int64_t>(big.size())}, {"extra.bin", 3}};
  m.file_sha256 = {{"model.pt", hex(big)}, {"extra.bin", hex("abc")}};
  vitedge::verify_artifact_files(dir.string(), m);  // all match: no throw
  auto bad = m;
  bad.file_sha256["extra.bin"] = hex("abd");
  CHECK_THROWS(vitedge::verify_artifact_files(dir.string(), bad), "extra.bin does not match its manifest: sha256 " + hex("abc"));
  bad = m;
  bad.file_bytes["model.pt"] = 5;
  CHECK_THROWS(vitedge::verify_artifact_files(dir.string(), bad), "model.pt has " + std::to_string(big.size()) + " bytes");
  bad = m;
  bad.file_sha256.erase("model.pt");
  CHECK_THROWS(vitedge::verify_artifact_files(dir.string(), bad), "records no sha256 for the artifact file 'model.pt'");
  bad = m;
  bad.file_bytes["gone.bin"] = -1;
  bad.file_sha256["gone.bin"] = hex("");
  CHECK_THROWS(vitedge::verify_artifact_files(dir.string(), bad), "gone.bin is missing");
  // Same size, one bit flipped in the middle of the big file.
  big[big.size() / 2] ^= 1;
  { std::ofstream(dir / "model.pt", std::ios::binary | std::ios::trunc) << big; }
  CHECK_THROWS(vitedge::verify_artifact_files(dir.string(), m), "model.pt does not match its manifest");
  fs::remove_all(dir);
}

// ---- issue 17 ---------------------------------------------------------------------------------------------

struct ZipEntry {
  std::string name, data;
  uint32_t ext_attr = 0;
  uint16_t flags = 0, method = 0;
  uint32_t claimed_size = 0;  // nonzero: the uncompressed size the central directory claims
  std::string local_name;     // nonempty: the local header names this instead
};

void put16(std::string& s, uint16_t v) { s.push_back(char(v & 0xff)), s.push_back(char(v >> 8)); }
void put32(std::string& s, uint32_t v) { put16(s, uint16_t(v & 0xffff)), put16(s, uint16_t(v >> 16)); }

// A zip archive (stored members, CRC left 0: the checker does not decompress) with exactly these entries.
std::string make_zip(const std::vector<ZipEntry>& entries) {
  std::string out, cd;
  for (const ZipEntry& e : entries) {
    const uint32_t offset = static_cast<uint32_t>(out.size());
    const std::string& lname = e.local_name.empty() ? e.name : e.local_name;
    put32(out, 0x04034b50), put16(out, 20), put16(out, e.flags), put16(out, e.method), put32(out, 0), put32(out, 0);
    put32(out, uint32_t(e.data.size())), put32(out, uint32_t(e.data.size()));
    put16(out, uint16_t(lname.size())), put16(out, 0);
    out += lname + e.data;
    put32(cd, 0x02014b50), put16(cd, 0x031e), put16(cd, 20), put16(cd, e.flags), put16(cd, e.method);
    put32(cd, 0), put32(cd, 0), put32(cd, uint32_t(e.data.size()));
    put32(cd, e.claimed_size ? e.claimed_size : uint32_t(e.data.size()));
    put16(cd, uint16_t(e.name.size())), put16(cd, 0), put16(cd, 0), put16(cd, 0), put16(cd, 0);
    put32(cd, e.ext_attr), put32(cd, offset);
    cd += e.name;
  }
  const uint32_t cd_offset = static_cast<uint32_t>(out.size());
  out += cd;
  put32(out, 0x06054b50), put16(out, 0), put16(out, 0), put16(out, uint16_t(entries.size()));
  put16(out, uint16_t(entries.size())), put32(out, uint32_t(cd.size())), put32(out, cd_offset), put16(out, 0);
  return out;
}

void test_zip_check() {
  auto check = [](const std::vector<ZipEntry>& e) { vitedge::check_zip_archive(make_zip(e), "t.pt2"); };
  check({{"model/data.pkl", "abc"}, {"model/data/0", std::string(100, 'x')}, {"model/", ""}});  // fine
  CHECK_THROWS(check({{"model/../../evil.txt", "x"}}), "escapes its folder ('..')");
  CHECK_THROWS(check({{"../evil.txt", "x"}}), "escapes its folder");
  CHECK_THROWS(check({{"/tmp/evil.txt", "x"}}), "is an absolute path");
  CHECK_THROWS(check({{"C:evil.txt", "x"}}), "is an absolute path");
  CHECK_THROWS(check({{"model\\..\\evil.txt", "x"}}), "holds a NUL or backslash");
  CHECK_THROWS(check({{std::string("model/a\0b", 9), "x"}}), "holds a NUL or backslash");
  ZipEntry link{"model/link", "/etc/passwd"};
  link.ext_attr = 0120777u << 16;
  CHECK_THROWS(check({link}), "is a symlink");
  ZipEntry enc{"model/secret", "x"};
  enc.flags = 1;
  CHECK_THROWS(check({enc}), "is encrypted");
  ZipEntry bz{"model/bz", "x"};
  bz.method = 12;
  CHECK_THROWS(check({bz}), "compression method 12");
  CHECK_THROWS(check({{"model/a", "x"}, {"model/./a", "y"}}), "appears twice");
  ZipEntry bomb{"model/bomb", std::string(10, 'x')};
  bomb.claimed_size = 1u << 30;
  CHECK_THROWS(check({bomb}), "fold, more than the limit of 200");
  ZipEntry liar{"model/a", "x"};
  liar.local_name = "../a";
  CHECK_THROWS(check({liar}), "is named differently in its local header");
  CHECK_THROWS(vitedge::check_zip_archive("PK\x03\x04 not really", "t.pt"), "not a zip archive");
  CHECK_THROWS(vitedge::check_zip_archive(std::string(5000, 'A'), "t.pt"), "not a zip archive");
  std::string z = make_zip({{"model/a", std::string(64, 'x')}});
  z[z.size() - 6] = char(0x7f);  // central directory offset beyond the file
  CHECK_THROWS(vitedge::check_zip_archive(z, "t.pt"), "refusing it");
  // Every prefix of a good archive is refused or accepted without a crash (run under the sanitizers).
  const std::string good = make_zip({{"model/data.pkl", "abc"}, {"model/data/0", std::string(100, 'x')}});
  for (size_t n = 0; n < good.size(); ++n) {
    try {
      vitedge::check_zip_archive(good.substr(0, n), "t.pt");
    } catch (const vitedge::Error&) {
    }
  }
}

// Protobuf wire bytes: a length-delimited field.
std::string pb_field(int field, const std::string& body) {
  std::string s;
  s.push_back(char((field << 3) | 2));
  s.push_back(char(body.size()));  // bodies here are < 128 bytes
  return s + body;
}

void test_onnx_external_data() {
  const std::string name = pb_field(8, "w");  // TensorProto.name
  const std::string location = pb_field(13, pb_field(1, "location") + pb_field(2, "w.bin"));
  std::string ext_loc = std::string(1, char((14 << 3) | 0)) + std::string(1, char(1));  // data_location EXTERNAL
  // ModelProto.graph(7).initializer(5)
  vitedge::check_onnx_no_external_data(pb_field(7, pb_field(5, name)), "m.onnx");
  CHECK_THROWS(vitedge::check_onnx_no_external_data(pb_field(7, pb_field(5, name + location)), "m.onnx"),
               "stores a tensor as external data");
  CHECK_THROWS(vitedge::check_onnx_no_external_data(pb_field(7, pb_field(5, name + ext_loc)), "m.onnx"),
               "data_location EXTERNAL");
  // A tensor in a node attribute of a subgraph: graph.node(1).attribute(5).g(6).initializer(5)
  const std::string nested = pb_field(7, pb_field(1, pb_field(5, pb_field(6, pb_field(5, name + location)))));
  CHECK_THROWS(vitedge::check_onnx_no_external_data(nested, "m.onnx"), "external data");
  // A function's node attribute tensor: functions(25).node(7).attribute(5).t(5)
  std::string fn = pb_field(7, pb_field(5, pb_field(5, name + location)));
  std::string model_fn = std::string(1, char((25 << 3) | 2)) ;
  model_fn = std::string("\xca\x01", 2) + char(fn.size()) + fn;  // field 25, wire 2: tag 202 = 0xca 0x01
  CHECK_THROWS(vitedge::check_onnx_no_external_data(model_fn, "m.onnx"), "external data");
  CHECK_THROWS(vitedge::check_onnx_no_external_data("\x3a\x7f", "m.onnx"), "not a valid protobuf");
  CHECK_THROWS(vitedge::check_onnx_no_external_data("this is not an ONNX model", "m.onnx"), "not a valid protobuf");
}

void test_openvino_ir_check() {
  const std::string ir = "<?xml version=\"1.0\"?>\n<net name=\"Model0\" version=\"11\">\n<layers/></net>\n";
  vitedge::check_openvino_ir(ir, "m.xml");                                   // what openvino.save_model writes
  vitedge::check_openvino_ir("\xEF\xBB\xBF<!-- c -->\n<net>\n</net>", "m.xml");  // BOM, comment, no declaration
  vitedge::check_openvino_ir("<net/>", "m.xml");
  CHECK_THROWS(vitedge::check_openvino_ir(std::string("\x08\x09\x12\x07pytorch", 11) + std::string(1, '\0'), "m.xml"),
               "NUL byte");  // an ONNX protobuf
  CHECK_THROWS(vitedge::check_openvino_ir("<?xml version=\"1.0\"?><!DOCTYPE net [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><net>&x;</net>",
                                          "m.xml"), "DOCTYPE or ENTITY");
  CHECK_THROWS(vitedge::check_openvino_ir(ir + "<!-- <!entity y 'z'> -->", "m.xml"), "DOCTYPE or ENTITY");
  CHECK_THROWS(vitedge::check_openvino_ir("<network></network>", "m.xml"), "root element is not <net>");
  CHECK_THROWS(vitedge::check_openvino_ir("<?xml-stylesheet href=\"x\"?><net/>", "m.xml"), "root element is not <net>");
  CHECK_THROWS(vitedge::check_openvino_ir("<?xml version=\"1.0\"?><?xml version=\"1.0\"?><net/>", "m.xml"),
               "root element is not <net>");  // one declaration only
  CHECK_THROWS(vitedge::check_openvino_ir("<?xml version=\"1.0\"", "m.xml"), "declaration is not closed");
  CHECK_THROWS(vitedge::check_openvino_ir("<!-- <net>", "m.xml"), "comment before its root element is not closed");
  CHECK_THROWS(vitedge::check_openvino_ir("", "m.xml"), "root element is not <net>");
  CHECK_THROWS(vitedge::check_openvino_ir("<net", "m.xml"), "root element is not <net>");
  CHECK_THROWS(vitedge::check_openvino_ir("ir_version: 8 graph { }", "m.xml"), "root element is not <net>");  // ONNX text
}

void test_openvino_manifest() {
  const std::string ov = replace(replace(replace(std::string(kGood), "\"artifact\": \"model.pt\"", "\"artifact\": \"ir/model.xml\""),
                                         "\"target\": \"torchscript\", \"backend\": \"libtorch\"",
                                         "\"target\": \"openvino\", \"backend\": \"openvino\""),
                                 "\"labels\"", "\"openvino\": OVBLOCK, \"labels\"");
  auto with = [&](const std::string& block) { return vitedge::parse_manifest(replace(ov, "OVBLOCK", block)); };
  auto m = with("{\"config\": {\"PERFORMANCE_HINT\": \"LATENCY\", \"INFERENCE_PRECISION_HINT\": \"bf16\"}, "
                "\"weights\": \"model.bin\", \"device\": \"CPU\"}");
  CHECK(m.openvino_weights == "ir/model.bin");  // beside the artifact, as Python's Path(artifact).parent / weights
  CHECK(m.openvino_config.has_value() && m.openvino_config->size() == 2);
  CHECK(m.openvino_config && (*m.openvino_config)[0].first == "INFERENCE_PRECISION_HINT" &&
        (*m.openvino_config)[0].second == "bf16");  // in key order (nlohmann::json objects are sorted)
  m = with("null");
  CHECK(m.openvino_weights == "ir/model.bin" && !m.openvino_config.has_value());  // default: artifact name + .bin
  CHECK(with("{\"weights\": \"./sub/./w.bin\"}").openvino_weights == "ir/sub/w.bin");
  CHECK(with("{\"weights\": \"\"}").openvino_weights == "ir/model.bin");  // "" is absent, as Python's `or`
  CHECK_THROWS(with("{\"weights\": \"../x.bin\"}"), "leaves the artifact directory");
  CHECK_THROWS(with("{\"weights\": \"/etc/passwd\"}"), "is absolute");
  CHECK_THROWS(with("{\"weights\": \"a\\\\b.bin\"}"), "backslash");
  CHECK_THROWS(with("{\"weights\": 3}"), "must be a file name");
  CHECK_THROWS(with("[1]"), "\"openvino\" must be an object");
  CHECK_THROWS(with("{\"config\": null}"), "openvino.config is not a mapping");
  CHECK_THROWS(with("{\"config\": {\"CACHE_DIR\": \"/tmp/x\"}}"), "openvino config CACHE_DIR=\"/tmp/x\" is not one vitedge applies");
  CHECK_THROWS(with("{\"config\": {\"INFERENCE_PRECISION_HINT\": \"i8\"}}"), "is not one vitedge applies");
  CHECK_THROWS(with("{\"config\": {\"PERFORMANCE_HINT\": [\"LATENCY\"]}}"), "is not one vitedge applies");
  CHECK_THROWS(with("{\"config\": {\"INFERENCE_NUM_THREADS\": \"64\"}}"), "is not one vitedge applies");
  // Other targets ignore the block, as the Python loader does.
  CHECK(vitedge::parse_manifest(replace(std::string(kGood), "\"labels\"", "\"openvino\": 5, \"labels\"")).openvino_weights.empty());
}

void test_read_once_and_manifest_bounds() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("vitedge_unit17_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  // A FIFO is refused without blocking (open O_NONBLOCK, fstat), as manifest.json or as a model file.
  CHECK(::mkfifo((dir / "manifest.json").c_str(), 0600) == 0);
  CHECK_THROWS(vitedge::read_regular_file((dir / "manifest.json").string(), 1 << 20, "manifest"),
               "is not a regular file");
  CHECK_THROWS(vitedge::read_manifest(dir.string()), "is not a regular file");
  CHECK_THROWS(vitedge::Runner::open(dir.string()), "is not a regular file");
  fs::remove(dir / "manifest.json");
  CHECK_THROWS(vitedge::read_regular_file("/dev/zero", 1 << 20, "manifest"), "is not a regular file");
  CHECK_THROWS(vitedge::read_regular_file(dir.string(), 1 << 20, "manifest"), "is not a regular file");
  // The size cap is checked before reading; the expected size too.
  { std::ofstream(dir / "manifest.json") << std::string((16 << 20) + 1, ' '); }
  CHECK_THROWS(vitedge::read_manifest(dir.string()), "more than the limit of 16777216");
  { std::ofstream(dir / "m.bin", std::ios::binary) << "hello"; }
  CHECK(vitedge::read_regular_file((dir / "m.bin").string(), 5, "file") == "hello");
  CHECK_THROWS(vitedge::read_regular_file((dir / "m.bin").string(), 4, "file"), "more than the limit of 4");
  CHECK_THROWS(vitedge::read_regular_file((dir / "m.bin").string(), 10, "file", 6), "manifest records 6");
  // Symlinks: inside the folder fine, out of it refused.
  fs::create_symlink("m.bin", dir / "inside.bin");
  CHECK(vitedge::artifact_file_path(dir.string(), "inside.bin") == (dir / "inside.bin").string());
  fs::create_symlink("/etc/hostname", dir / "outside.bin");
  CHECK_THROWS(vitedge::artifact_file_path(dir.string(), "outside.bin"), "outside the artifact directory");
  CHECK_THROWS(vitedge::artifact_file_path(dir.string(), "nope.bin"), "is missing");
  // "sha256": null entries are refused when verifying.
  vitedge::Manifest m;
  m.artifact = "m.bin";
  m.file_bytes = {{"m.bin", 5}, {"inside.bin", 5}};
  m.file_sha256 = {{"m.bin", vitedge::sha256_hex("hello", 5)}};
  CHECK_THROWS(vitedge::verify_artifact_files(dir.string(), m), "lists 'inside.bin' without a sha256");
  m.file_sha256["inside.bin"] = m.file_sha256["m.bin"];
  vitedge::verify_artifact_files(dir.string(), m);
  m.file_bytes["outside.bin"] = -1;
  m.file_sha256["outside.bin"] = m.file_sha256["m.bin"];
  CHECK_THROWS(vitedge::verify_artifact_files(dir.string(), m), "outside the artifact directory");
  fs::remove_all(dir);

  // Signature bundle: malformed input is an Error, never a crash.
  CHECK_THROWS(vitedge::verify_signature_bundle("{}", {}, "model.sig"), "no trusted public key");
  CHECK_THROWS(vitedge::verify_signature_bundle("{}", {"/nonexistent/pub.pem"}, "model.sig"), "cannot open public key");
}

// A 24-bit BMP (bottom-up rows, 4-byte row padding) of w x h pixels, colour rgb(x, y).
std::string make_bmp(int w, int h, int claimed_w = 0, int claimed_h = 0) {
  const int row = (w * 3 + 3) / 4 * 4;
  std::string b(54 + static_cast<size_t>(row) * h, '\0');
  auto put32 = [&](size_t at, uint32_t v) { for (int i = 0; i < 4; ++i) b[at + i] = static_cast<char>(v >> (8 * i)); };
  b[0] = 'B'; b[1] = 'M';
  put32(2, static_cast<uint32_t>(b.size()));
  put32(10, 54);
  put32(14, 40);
  put32(18, static_cast<uint32_t>(claimed_w ? claimed_w : w));
  put32(22, static_cast<uint32_t>(claimed_h ? claimed_h : h));
  b[26] = 1; b[28] = 24;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const size_t at = 54 + static_cast<size_t>(h - 1 - y) * row + static_cast<size_t>(x) * 3;
      b[at] = static_cast<char>(7);             // B
      b[at + 1] = static_cast<char>(10 * y);    // G
      b[at + 2] = static_cast<char>(10 * x);    // R
    }
  return b;
}

void test_image_from_memory() {
  vitedge::Preprocessing p;
  p.height = 2;
  p.width = 3;
  p.mean = {0.5f, 0.25f, 0.f};
  p.std = {0.5f, 2.f, 1.f};
  const std::string bmp = make_bmp(3, 2);
  const auto* bytes = reinterpret_cast<const unsigned char*>(bmp.data());
  const vitedge::Tensor t = vitedge::load_image_from_memory(bytes, bmp.size(), p);
  CHECK((t.shape == std::vector<int64_t>{1, 3, 2, 3}));
  // Same size: no resize; value = (pixel * scale - mean) / std in float32.
  CHECK(t.data[0 * 6 + 1 * 3 + 2] == (20.f * p.scale - 0.5f) / 0.5f);   // R at (y=1, x=2)
  CHECK(t.data[1 * 6 + 1 * 3 + 0] == (10.f * p.scale - 0.25f) / 2.f);   // G at (y=1, x=0)
  CHECK(t.data[2 * 6 + 0] == 7.f * p.scale);                             // B at (0, 0)
  // Resizing (cover + center crop) gives the target shape.
  p.height = p.width = 16;
  CHECK((vitedge::load_image_from_memory(bytes, bmp.size(), p).shape == std::vector<int64_t>{1, 3, 16, 16}));

  CHECK_THROWS(vitedge::load_image_from_memory(bytes, 0, p), "no bytes");
  CHECK_THROWS(vitedge::load_image_from_memory(bytes, 20, p), "cannot decode image <in memory>");
  // A header that claims 100000 x 100000 pixels is refused before decoding.
  const std::string huge = make_bmp(2, 2, 100000, 100000);
  CHECK_THROWS(vitedge::load_image_from_memory(reinterpret_cast<const unsigned char*>(huge.data()), huge.size(), p),
               "over the limit");
  // 70000 x 1 pixels covering 16 x 16 would need 1.12e6 x 16 = 17.9M pixels: fine; 64 x 64 needs 4.48e6 x 64 = 287M.
  const std::string strip = make_bmp(70000, 1);
  p.height = p.width = 64;
  CHECK_THROWS(vitedge::load_image_from_memory(reinterpret_cast<const unsigned char*>(strip.data()), strip.size(), p),
               "aspect ratio too extreme");

  // JPEG whose DHT table declares 255 + 255 = 510 codes of lengths 15 and 16 (> 256, code lengths valid):
  // refused before stb_image builds the table
  // (stb 2.27 would write past stbi__huffman::size[257]; cpp/fuzz/regressions/image-jpeg-dht-over-256.bin).
  std::string jpeg = "\xFF\xD8\xFF\xC4";
  jpeg += std::string("\x00\x13\x00", 3) + std::string(14, '\0') + "\xFF\xFF" + std::string(64, '\x01') + "\xFF\xD9";
  CHECK_THROWS(vitedge::load_image_from_memory(reinterpret_cast<const unsigned char*>(jpeg.data()), jpeg.size(), p),
               "Huffman table with 510 codes");
  // Over-subscribed code lengths (3 codes of length 1), and a baseline scan using tables never defined.
  const std::string kraft = std::string("\xFF\xD8\xFF\xC4\x00\x16\x00\x03", 8) + std::string(15, '\0') + "abc\xFF\xD9";
  CHECK_THROWS(vitedge::load_image_from_memory(reinterpret_cast<const unsigned char*>(kraft.data()), kraft.size(), p),
               "over-subscribed");
  const std::string undefined = std::string("\xFF\xD8\xFF\xC0\x00\x0B\x08\x00\x02\x00\x02\x01\x01\x11\x00"
                                            "\xFF\xDA\x00\x08\x01\x01\x00\x00\x3F\x00\x12\x34\xFF\xD9", 30);
  CHECK_THROWS(vitedge::load_image_from_memory(reinterpret_cast<const unsigned char*>(undefined.data()), undefined.size(), p),
               "Huffman table that was not defined");
  // stb skips 0xFF fill bytes before SOI: the same table behind them (cpp/fuzz/regressions/*-fill-bytes.bin).
  const std::string filled = "\xFF\xFF\xFF" + jpeg;
  CHECK_THROWS(vitedge::load_image_from_memory(reinterpret_cast<const unsigned char*>(filled.data()), filled.size(), p),
               "Huffman table with 510 codes");
}

void test_tensor() {
  vitedge::Tensor t;
  t.shape = {2, 3, 4};
  CHECK(t.numel() == 24);
  t.shape = {};
  CHECK(t.numel() == 1);
}

}  // namespace

// Runner API pieces that need no model: named outputs, the backend table, RGB preprocessing, option checks.
void test_runner_api() {
  std::vector<vitedge::Tensor> outs(2);
  outs[0].name = "logits";
  outs[0].shape = {1, 3};
  outs[1].name = "embeddings";
  CHECK(&vitedge::output(outs, "embeddings") == &outs[1]);
  CHECK_THROWS(vitedge::output(outs, "attn"), "no output named 'attn'; outputs: logits, embeddings");

  bool ts = false, aoti = false;
  for (const auto& b : vitedge::backends()) {
    ts |= b.target == "torchscript" && b.backend == "libtorch" && b.built;
    aoti |= b.target == "aotinductor" && b.backend == "libtorch" && b.built;
    CHECK(b.built || b.rebuild_hint.find("-DVITEDGE_WITH_") == 0);
  }
#if VITEDGE_EXPECT_TORCH
  CHECK(ts && aoti);
#else
  CHECK(!ts && !aoti);  // -DVITEDGE_WITH_TORCH=OFF
#endif

  // preprocess_rgb: a 2x2 image upscaled to 4x4 (PIL bilinear: edge pixels keep their value), then normalised.
  vitedge::Preprocessing p;
  p.height = p.width = 4;
  const unsigned char rgb[2 * 2 * 3] = {0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 255, 255};  // left black, right white
  vitedge::Tensor t = vitedge::preprocess_rgb(rgb, 2, 2, p);
  CHECK((t.shape == std::vector<int64_t>{1, 3, 4, 4}));
  CHECK_NEAR(t.data[0], 0.0, 0.0);          // (0, 0): black
  CHECK_NEAR(t.data[3], 1.0, 0.0);          // (0, 3): white
  CHECK(t.data[1] > 0.0f && t.data[1] < t.data[2] && t.data[2] < 1.0f);  // a ramp in between
  CHECK_THROWS(vitedge::preprocess_rgb(nullptr, 2, 2, p), "null pointer");
  CHECK_THROWS(vitedge::preprocess_rgb(rgb, 0, 2, p), "must be positive");

  vitedge::Options o;
  o.device = "gpu";
  CHECK_THROWS(vitedge::Runner::open(".", o), "device must be");
  o.device = "cpu";
  o.warmup = -1;
  CHECK_THROWS(vitedge::Runner::open(".", o), "warmup must be >= 0");
}

int main() {
  test_runner_api();
  test_percentile();
  test_manifest();
  test_artifact_location();
  test_tensor();
  test_sha256();
  test_image_from_memory();
  test_zip_check();
  test_onnx_external_data();
  test_openvino_ir_check();
  test_openvino_manifest();
  test_read_once_and_manifest_bounds();
  if (failures) {
    std::cerr << failures << " check(s) failed\n";
    return 1;
  }
  std::cout << "all unit checks passed\n";
  return 0;
}
