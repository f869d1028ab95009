// vitedge_verified_bytes_test PUB.pem ARTIFACT_DIR... : the backend loads the bytes Runner::open checked, not what
// the path holds afterwards (no hash-then-reopen race). For each (signed) artifact: open it once for reference
// outputs; copy it to a scratch folder; open the copy with a hook that, after the check and before the backend
// loads, replaces the model file on disk with garbage (same size, then a different size). The open must succeed and
// give the reference outputs: a backend that re-opened the path would fail to load the garbage. Also checks that
// the AOTInductor backend leaves no private copy behind in $TMPDIR after close and after a failed load.
// Exit code = failures.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "backend.h"
#include "vitedge/runner.h"

namespace fs = std::filesystem;

namespace {

int failures = 0;
void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  failures += !ok;
}

size_t swap_size_delta = 0;
void swap_in_garbage(const std::string& path) {
  const auto size = fs::file_size(path);
  fs::remove(path);  // a new inode, as an attacker's rename would give
  std::ofstream(path, std::ios::binary) << std::string(size + swap_size_delta, 'X');
}

size_t count_private_copies(const fs::path& tmp) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(tmp))
    n += e.path().filename().string().rfind("vitedge-aoti-", 0) == 0;
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return std::fprintf(stderr, "usage: vitedge_verified_bytes_test PUB.pem ARTIFACT_DIR...\n"), 2;
  const fs::path scratch = fs::temp_directory_path() / ("vitedge-verified-bytes-" + std::to_string(::getpid()));
  const fs::path tmp = scratch / "tmp";
  fs::create_directories(tmp);
  setenv("TMPDIR", tmp.c_str(), 1);  // where the AOTInductor backend makes its private copy
  vitedge::Options opt;
  opt.threads = 1;
  opt.trusted_keys = {argv[1]};
  for (int a = 2; a < argc; ++a) {
    try {
      std::vector<float> ref;
      vitedge::Tensor x;
      {
        auto r = vitedge::Runner::open(argv[a], opt);
        const auto& p = *r->manifest().preprocessing;
        std::vector<unsigned char> rgb(size_t(p.width) * p.height * 3);
        for (size_t k = 0; k < rgb.size(); ++k) rgb[k] = static_cast<unsigned char>((k * 37) % 251);
        x = vitedge::preprocess_rgb(rgb.data(), p.width, p.height, p);
        ref = r->run(x).at(0).data;
      }
      check(count_private_copies(tmp) == 0, std::string(argv[a]) + ": no private copy left after close");
      for (size_t delta : {size_t{0}, size_t{4096}}) {
        const fs::path copy = scratch / ("copy" + std::to_string(delta));
        fs::remove_all(copy);
        fs::copy(argv[a], copy, fs::copy_options::recursive);
        swap_size_delta = delta;
        vitedge::after_verify_hook_for_tests = &swap_in_garbage;
        std::unique_ptr<vitedge::Runner> r;
        std::string err;
        try {
          r = vitedge::Runner::open(copy.string(), opt);
        } catch (const vitedge::Error& e) {
          err = e.what();
        }
        vitedge::after_verify_hook_for_tests = nullptr;
        const std::string what = std::string(argv[a]) + ": model file swapped for garbage (" +
                                 (delta ? "other size" : "same size") + ") after the check";
        check(r != nullptr, what + ": open loads the checked bytes" + (err.empty() ? "" : " (error: " + err + ")"));
        if (r) {
          const auto out = r->run(x).at(0).data;
          double d = out.size() == ref.size() ? 0 : INFINITY;
          for (size_t i = 0; i < out.size() && i < ref.size(); ++i) d = std::fmax(d, std::fabs(out[i] - ref[i]));
          check(d <= 1e-6, what + ": outputs equal the original's (max abs diff " + std::to_string(d) + ")");
        }
        r.reset();
        // The swapped folder no longer verifies: refused (and, for AOTInductor, nothing left in $TMPDIR).
        std::string err2;
        try {
          vitedge::Runner::open(copy.string(), opt);
        } catch (const vitedge::Error& e) {
          err2 = e.what();
        }
        check(!err2.empty(), what + ": a later open refuses the swapped file: " + err2);
        check(count_private_copies(tmp) == 0, what + ": no private copy left in TMPDIR");
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "FAIL %s: %s\n", argv[a], e.what());
      ++failures;
    }
  }
  std::error_code ec;
  fs::remove_all(scratch, ec);
  std::printf("%d failure(s)\n", failures);
  return failures;
}
