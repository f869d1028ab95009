// Unit tests for the statistics helpers and the manifest parser. No framework: CHECK macros, exit code = failures.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>

#include "sha256.h"  // internal (src/): SHA-256 and the artifact integrity check
#include "vitedge/runner.h"

namespace {

int failures = 0;

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      ++failures;                                                                    \
      std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK(" #cond ") failed\n";     \
    }                                                                                \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                            \
  do {                                                                                                   \
    const double va_ = (a), vb_ = (b);                                                                   \
    if (!(std::fabs(va_ - vb_) <= (tol))) {                                                              \
      ++failures;                                                                                        \
      std::cerr << __FILE__ << ":" << __LINE__ << ": " #a " = " << va_ << ", expected " << vb_ << "\n"; \
    }                                                                                                    \
  } while (0)

// Expect fn() to throw vitedge::Error whose message contains `needle`.
void check_throws(const std::function<void()>& fn, const std::string& needle, int line) {
  try {
    fn();
  } catch (const vitedge::Error& e) {
    if (std::string(e.what()).find(needle) == std::string::npos) {
      ++failures;
      std::cerr << "line " << line << ": message '" << e.what() << "' lacks '" << needle << "'\n";
    }
    return;
  } catch (const std::exception& e) {
    ++failures;
    std::cerr << "line " << line << ": threw a non-vitedge exception: " << e.what() << "\n";
    return;
  }
  ++failures;
  std::cerr << "line " << line << ": expected vitedge::Error containing '" << needle << "'\n";
}
#define CHECK_THROWS(expr, needle) check_throws([&] { (void)(expr); }, needle, __LINE__)

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
  "files": {"model.pt": {"sha256": "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB", "bytes": 1234}},
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
              "\"files\": {\"model.pt\": {\"sha256\": \"ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB\", \"bytes\": 1234}}",
              "\"files\": null"));
  CHECK(m2.labels.empty() && m2.file_bytes.empty() && m2.file_sha256.empty());

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
  const std::string sha = "\"ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB\"";
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

  // Opening: a missing directory and an unsupported backend are clear errors.
  CHECK_THROWS(vitedge::Runner::open("/nonexistent/vitedge-artifact"), "does not exist");
  CHECK_THROWS(vitedge::read_manifest("/nonexistent/vitedge-artifact"), "cannot open");
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
  CHECK_THROWS(vitedge::sha256_file_hex((dir / "nope").string()), "cannot read");

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
  CHECK(ts && aoti);

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
  test_tensor();
  test_sha256();
  test_image_from_memory();
  if (failures) {
    std::cerr << failures << " check(s) failed\n";
    return 1;
  }
  std::cout << "all unit checks passed\n";
  return 0;
}
