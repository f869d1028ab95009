// Unit tests for the statistics helpers and the manifest parser. No framework: CHECK macros, exit code = failures.
#include <cmath>
#include <functional>
#include <iostream>
#include <string>

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
  "files": {"model.pt": {"sha256": "00", "bytes": 1234}},
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

  // Optional blocks may be null.
  const auto m2 = vitedge::parse_manifest(
      replace(replace(std::string(kGood), "\"labels\": [\"a\", \"b\"]", "\"labels\": null"),
              "\"files\": {\"model.pt\": {\"sha256\": \"00\", \"bytes\": 1234}}", "\"files\": null"));
  CHECK(m2.labels.empty() && m2.file_bytes.empty());

  CHECK_THROWS(vitedge::parse_manifest(replace(kGood, "\"schema_version\": 1", "\"schema_version\": 99")),
               "schema_version 99");
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

  // Opening: a missing directory and an unsupported backend are clear errors.
  CHECK_THROWS(vitedge::Runner::open("/nonexistent/vitedge-artifact"), "does not exist");
  CHECK_THROWS(vitedge::read_manifest("/nonexistent/vitedge-artifact"), "cannot open");
}

void test_tensor() {
  vitedge::Tensor t;
  t.shape = {2, 3, 4};
  CHECK(t.numel() == 24);
  t.shape = {};
  CHECK(t.numel() == 1);
}

}  // namespace

int main() {
  test_percentile();
  test_manifest();
  test_tensor();
  if (failures) {
    std::cerr << failures << " check(s) failed\n";
    return 1;
  }
  std::cout << "all unit checks passed\n";
  return 0;
}
