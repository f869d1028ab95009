// vitedge_api_checks ARTIFACT_DIR SCRATCH_DIR: the C++ API refuses bad inputs with vitedge::Error (issue 9):
// NaN / +Inf / -Inf values, wrong rank, wrong channel count, a data size that disagrees with the shape;
// Runner::open verifies SHA-256 (a copy of the artifact with one flipped bit is refused, naming model.pt) unless
// Options::verify is false. ARTIFACT_DIR: a TorchScript artifact (ctest fixture). Exit code = failures.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "vitedge/runner.h"

namespace fs = std::filesystem;

namespace {

int failures = 0;

void expect_error(const std::string& what, const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
  } catch (const vitedge::Error& e) {
    if (std::string(e.what()).find(needle) != std::string::npos) {
      std::cout << "ok   " << what << ": " << e.what() << "\n";
      return;
    }
    std::cerr << "FAIL " << what << ": message '" << e.what() << "' lacks '" << needle << "'\n";
  } catch (const std::exception& e) {
    std::cerr << "FAIL " << what << ": non-vitedge exception " << e.what() << "\n";
  }
  ++failures;
  std::cerr << "FAIL " << what << ": expected vitedge::Error containing '" << needle << "'\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: vitedge_api_checks ARTIFACT_DIR SCRATCH_DIR\n";
    return 2;
  }
  const std::string dir = argv[1];
  vitedge::Options opt;
  opt.threads = 1;
  opt.allow_unsigned_code = true;  // our own fixture export; signatures are tested by cpp_trust
  auto runner = vitedge::Runner::open(dir, opt);
  const auto& p = runner->manifest().preprocessing.value();
  vitedge::Tensor good;
  good.shape = {2, 3, p.height, p.width};
  good.data.assign(static_cast<size_t>(good.numel()), 0.25f);
  const auto ref = runner->run(good);
  if (ref.empty() || ref[0].shape[0] != 2) {
    std::cerr << "FAIL the good input did not give a batch-2 output\n";
    ++failures;
  }

  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const auto& [name, value, at] : std::vector<std::tuple<std::string, float, size_t>>{
           {"NaN", nan, 7}, {"+Inf", inf, good.data.size() - 1}, {"-Inf", -inf, 0}}) {
    vitedge::Tensor x = good;
    x.data[at] = value;
    expect_error(name + " input", [&] { runner->run(x); },
                 std::string("non-finite value (") + (name == "NaN" ? "NaN" : "Inf") + ") at flat index " + std::to_string(at));
  }
  vitedge::Tensor rank3 = good;
  rank3.shape = {3, p.height, p.width};
  rank3.data.resize(static_cast<size_t>(rank3.numel()));
  expect_error("rank 3 input", [&] { runner->run(rank3); }, "does not match the artifact's input");
  vitedge::Tensor gray = good;
  gray.shape = {2, 1, p.height, p.width};
  gray.data.resize(static_cast<size_t>(gray.numel()));
  expect_error("1-channel input", [&] { runner->run(gray); }, "does not match the artifact's input");
  vitedge::Tensor short_data = good;
  short_data.data.pop_back();
  expect_error("data shorter than the shape", [&] { runner->run(short_data); }, "values but its shape");
  vitedge::Tensor zero_batch = good;
  zero_batch.shape[0] = 0;
  zero_batch.data.clear();
  expect_error("batch 0", [&] { runner->run(zero_batch); }, "does not match the artifact's input");

  // Integrity: one flipped bit in model.pt (same size) is refused, naming the file; verify=false loads it.
  const fs::path scratch = fs::path(argv[2]) / "flipped";
  fs::remove_all(scratch);
  fs::create_directories(scratch.parent_path());
  fs::copy(dir, scratch, fs::copy_options::recursive);
  const std::string model = (scratch / runner->manifest().artifact).string();
  std::vector<char> bytes;
  {
    std::ifstream in(model, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  bytes[bytes.size() - 30] ^= 0x01;  // inside the zip's end records: the archive may or may not still load
  {
    std::ofstream out(model, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  expect_error("flipped bit, verify on", [&] { vitedge::Runner::open(scratch.string(), opt); },
               runner->manifest().artifact + " does not match its manifest: sha256");
  vitedge::Options skip = opt;
  skip.verify = false;
  try {  // skipping the check hands the file to libtorch: it loads, or fails with libtorch's own error
    vitedge::Runner::open(scratch.string(), skip);
    std::cout << "ok   flipped bit, verify off: loaded (no SHA-256 check)\n";
  } catch (const vitedge::Error& e) {
    if (std::string(e.what()).find("sha256") != std::string::npos) {
      std::cerr << "FAIL verify=false still checked SHA-256: " << e.what() << "\n";
      ++failures;
    } else {
      std::cout << "ok   flipped bit, verify off: no SHA-256 check; libtorch says: " << e.what() << "\n";
    }
  }
  fs::remove_all(scratch);
  std::cout << (failures ? "FAILED" : "all API checks passed") << "\n";
  return failures;
}
