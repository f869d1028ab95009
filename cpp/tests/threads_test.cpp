// vitedge_threads_test ARTIFACT_DIR... : Runner::run from several threads at once gives the single-threaded
// results, for (1) one Runner shared by all threads and (2) one Runner per thread; and (3) Runner::open from
// several threads at once, kOpens times each, succeeds and gives the single-threaded results (libtorch's AOTI
// package loader shares parser state between loads; before the backend serialized loading, this failed about
// one run in ten with "No device information found", an abort or a segfault).
// Inputs: the artifact's preprocessing applied to a synthetic gradient image at batches 1..4 (the values only
// need to differ per input; parity with Python on real photos is tested elsewhere). Exit code = failures.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "vitedge/runner.h"

namespace {

constexpr int kThreads = 4, kRounds = 6, kOpens = 8;

// One intra-op thread per run: the concurrency comes from the calling threads (and OpenMP spin-waiting with
// more threads than cores makes libtorch CPU kernels crawl on a loaded machine).
vitedge::Options options() {
  vitedge::Options o;
  o.threads = 1;
  o.allow_unsigned_code = true;  // the fixtures are our own exports (signatures are tested by cpp_trust)
  return o;
}

std::vector<vitedge::Tensor> make_inputs(const vitedge::Runner& r) {
  const vitedge::Preprocessing& p = r.manifest().preprocessing.value();
  std::vector<vitedge::Tensor> inputs;
  for (int b = 1; b <= 4; ++b) {
    vitedge::Tensor x;
    for (int i = 0; i < b; ++i) {
      std::vector<unsigned char> rgb(static_cast<size_t>(p.width) * p.height * 3);
      for (size_t k = 0; k < rgb.size(); ++k) rgb[k] = static_cast<unsigned char>((k * (7 + 13 * b + 5 * i)) % 251);
      vitedge::Tensor one = vitedge::preprocess_rgb(rgb.data(), p.width, p.height, p);
      x.shape = one.shape;
      x.data.insert(x.data.end(), one.data.begin(), one.data.end());
    }
    x.shape[0] = b;
    inputs.push_back(std::move(x));
  }
  return inputs;
}

double max_diff(const std::vector<vitedge::Tensor>& a, const std::vector<vitedge::Tensor>& b) {
  if (a.size() != b.size()) return INFINITY;
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].shape != b[i].shape || a[i].name != b[i].name) return INFINITY;
    for (size_t k = 0; k < a[i].data.size(); ++k) d = std::max(d, std::fabs(double(a[i].data[k]) - b[i].data[k]));
  }
  return d;
}

// Each thread runs every input kRounds times in a thread-dependent order; returns the worst difference.
double hammer(const std::string& dir, bool shared, const std::vector<std::vector<vitedge::Tensor>>& ref,
              const std::vector<vitedge::Tensor>& inputs, std::atomic<int>& errors) {
  std::unique_ptr<vitedge::Runner> one = shared ? vitedge::Runner::open(dir, options()) : nullptr;
  std::vector<double> worst(kThreads, 0.0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      try {
        std::unique_ptr<vitedge::Runner> own = shared ? nullptr : vitedge::Runner::open(dir, options());
        const vitedge::Runner& r = shared ? *one : *own;
        for (int round = 0; round < kRounds; ++round)
          for (size_t j = 0; j < inputs.size(); ++j) {
            const size_t k = (j + t + round) % inputs.size();
            worst[t] = std::max(worst[t], max_diff(r.run(inputs[k]), ref[k]));
          }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "thread %d: %s\n", t, e.what());
        ++errors;
      }
    });
  for (auto& th : threads) th.join();
  return *std::max_element(worst.begin(), worst.end());
}

// Each thread opens (and closes) its own Runner kOpens times and runs one input on it; returns the worst difference.
double open_storm(const std::string& dir, const std::vector<std::vector<vitedge::Tensor>>& ref,
                  const std::vector<vitedge::Tensor>& inputs, std::atomic<int>& errors) {
  std::vector<double> worst(kThreads, 0.0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOpens; ++i) {
        try {
          const size_t k = static_cast<size_t>(t + i) % inputs.size();
          worst[t] = std::max(worst[t], max_diff(vitedge::Runner::open(dir, options())->run(inputs[k]), ref[k]));
        } catch (const std::exception& e) {
          std::fprintf(stderr, "thread %d, open %d: %s\n", t, i, e.what());
          ++errors;
        }
      }
    });
  for (auto& th : threads) th.join();
  return *std::max_element(worst.begin(), worst.end());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return std::fprintf(stderr, "usage: vitedge_threads_test ARTIFACT_DIR...\n"), 2;
  int failures = 0;
  for (int a = 1; a < argc; ++a) {
    try {
      auto runner = vitedge::Runner::open(argv[a], options());
      const auto inputs = make_inputs(*runner);
      std::vector<std::vector<vitedge::Tensor>> ref;
      for (const auto& x : inputs) ref.push_back(runner->run(x));
      runner.reset();
      for (bool shared : {true, false}) {
        std::atomic<int> errors{0};
        const double d = hammer(argv[a], shared, ref, inputs, errors);
        const bool ok = errors == 0 && d <= 1e-5;
        std::printf("%s %s (%s): %d threads x %d rounds x %zu inputs, max abs diff vs single-threaded = %.3g\n",
                    ok ? "ok  " : "FAIL", argv[a], shared ? "one shared Runner" : "one Runner per thread", kThreads,
                    kRounds, inputs.size(), d);
        failures += !ok;
      }
      std::atomic<int> errors{0};
      const double d = open_storm(argv[a], ref, inputs, errors);
      const bool ok = errors == 0 && d <= 1e-5;
      std::printf("%s %s (concurrent opens): %d threads x %d opens, %d failed, max abs diff vs single-threaded = %.3g\n",
                  ok ? "ok  " : "FAIL", argv[a], kThreads, kOpens, errors.load(), d);
      failures += !ok;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "FAIL %s: %s\n", argv[a], e.what());
      ++failures;
    }
  }
  return failures;
}
