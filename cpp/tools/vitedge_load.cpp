// vitedge-load: load test of the C++ runner. N caller threads run batches through one shared Runner (or one
// Runner each) for a fixed time; every output is compared bit for bit with the single-threaded output of the
// same input, computed first on the main thread; resident memory (/proc/self/statm) is sampled every second.
//
//   vitedge-load ARTIFACT IMAGE_OR_DIR... [--threads 8] [--seconds 60] [--warmup-seconds 10] [--mode shared|each]
//                [--intra-op 1] [--json OUT]
//
// Inputs: each IMAGE preprocessed with the manifest's preprocessing at batch 1, plus one batch of all images.
// Units: seconds, MiB (2^20 bytes), throughput in images/s; rss slopes by least squares over the samples
// taken after the warm-up, and over the second half of those, in MiB per minute. Prints the JSON (and writes it to --json). Exit codes: 0 all
// outputs identical and no error, 1 a mismatch or an error, 2 usage error.
//
// Intra-op threads default to 1 per run: the concurrency comes from the caller threads, and libtorch's intra-op
// thread count is process-wide (Options::threads). Set OMP_NUM_THREADS=1 as well, so OpenMP worker threads of the
// callers do not spin against each other (and so ThreadSanitizer sees no uninstrumented OpenMP barriers).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "vitedge/runner.h"

using ordered_json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  std::string artifact, json_out, mode = "shared";
  std::vector<std::string> images;
  int threads = 8, intra_op = 1;
  double seconds = 60, warmup_seconds = 10;
  std::vector<std::string> keys;  // --key PUB.pem (repeatable): model.sig must verify with one
  bool trust_code = false;        // --trust-code: load an unsigned TorchScript / AOTInductor artifact
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double to_number(const std::string& flag, const std::string& v, double lo, double hi) {
  size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (v.empty() || pos != v.size() || !(x >= lo && x <= hi))
    throw UsageError(flag + " expects a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v + "'");
  return x;
}

Args parse(int argc, char** argv) {
  Args a;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << "usage: vitedge-load ARTIFACT IMAGE... [--threads N] [--seconds S] [--warmup-seconds S]\n"
                   "                    [--mode shared|each] [--intra-op N] [--json OUT] [--key PUB.pem]... [--trust-code]\n";
      std::exit(0);
    }
    if (arg.rfind("--", 0) != 0) {
      pos.push_back(arg);
      continue;
    }
    if (arg == "--trust-code") {
      a.trust_code = true;
      continue;
    }
    if (i + 1 >= argc) throw UsageError(arg + " needs a value");
    const std::string v = argv[++i];
    if (arg == "--threads") a.threads = static_cast<int>(to_number(arg, v, 1, 256));
    else if (arg == "--seconds") a.seconds = to_number(arg, v, 0.5, 86400);
    else if (arg == "--warmup-seconds") a.warmup_seconds = to_number(arg, v, 0, 86400);
    else if (arg == "--intra-op") a.intra_op = static_cast<int>(to_number(arg, v, 0, 256));
    else if (arg == "--json") a.json_out = v;
    else if (arg == "--key") a.keys.push_back(v);
    else if (arg == "--mode") {
      if (v != "shared" && v != "each") throw UsageError("--mode must be shared or each, got '" + v + "'");
      a.mode = v;
    } else throw UsageError("unknown option " + arg);
  }
  if (pos.size() < 2) throw UsageError("need ARTIFACT and at least one IMAGE (see --help)");
  if (a.warmup_seconds >= a.seconds) throw UsageError("--warmup-seconds must be below --seconds");
  a.artifact = pos[0];
  for (size_t i = 1; i < pos.size(); ++i) {  // a directory stands for the regular files in it, sorted
    std::error_code ec;
    if (std::filesystem::is_directory(pos[i], ec)) {
      std::vector<std::string> files;
      for (const auto& e : std::filesystem::directory_iterator(pos[i], ec))
        if (e.is_regular_file()) files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
      if (files.empty()) throw UsageError("no files in " + pos[i]);
      a.images.insert(a.images.end(), files.begin(), files.end());
    } else {
      a.images.push_back(pos[i]);
    }
  }
  return a;
}

double rss_mib() {
  std::ifstream in("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  in >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

bool identical(const std::vector<vitedge::Tensor>& a, const std::vector<vitedge::Tensor>& b, double& max_abs) {
  if (a.size() != b.size()) {
    max_abs = INFINITY;
    return false;
  }
  bool same = true;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].shape != b[i].shape || a[i].data.size() != b[i].data.size()) {
      max_abs = INFINITY;
      return false;
    }
    if (std::memcmp(a[i].data.data(), b[i].data.data(), a[i].data.size() * sizeof(float)) != 0) {
      same = false;
      for (size_t k = 0; k < a[i].data.size(); ++k)
        max_abs = std::max(max_abs, std::fabs(static_cast<double>(a[i].data[k]) - b[i].data[k]));
    }
  }
  return same;
}

// Least-squares slope of y over x.
double slope(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = x.size();
  if (n < 2) return 0;
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) mx += x[i], my += y[i];
  mx /= n, my /= n;
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < n; ++i) sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx);
  return sxx > 0 ? sxy / sxx : 0;
}

int load(const Args& a) {
  vitedge::Options opt;
  opt.threads = a.intra_op;
  opt.trusted_keys = a.keys;
  opt.allow_unsigned_code = a.trust_code;
  const double rss_before_open = rss_mib();
  std::vector<std::unique_ptr<vitedge::Runner>> runners;
  runners.push_back(vitedge::Runner::open(a.artifact, opt));
  if (a.mode == "each")
    for (int t = 1; t < a.threads; ++t) runners.push_back(vitedge::Runner::open(a.artifact, opt));
  const vitedge::Manifest& m = runners[0]->manifest();
  if (!m.preprocessing) throw vitedge::Error("the manifest has no preprocessing block: images cannot be fed");

  std::vector<vitedge::Tensor> inputs;
  vitedge::Tensor all;
  for (const auto& path : a.images) {
    vitedge::Tensor x = vitedge::load_image(path, *m.preprocessing);
    all.shape = x.shape;
    all.data.insert(all.data.end(), x.data.begin(), x.data.end());
    inputs.push_back(std::move(x));
  }
  if (inputs.size() > 1 && m.inputs.front().shape[0] < 0) {
    all.shape[0] = static_cast<int64_t>(inputs.size());
    inputs.push_back(std::move(all));
  }
  std::vector<int64_t> batch_of(inputs.size());
  std::vector<std::vector<vitedge::Tensor>> reference;
  for (size_t i = 0; i < inputs.size(); ++i) {
    batch_of[i] = inputs[i].shape[0];
    reference.push_back(runners[0]->run(inputs[i]));  // single-threaded reference, main thread
  }

  std::atomic<bool> stop{false};
  std::atomic<int64_t> runs{0}, images{0}, mismatches{0}, errors{0};
  std::vector<double> worst(a.threads, 0.0);
  std::vector<std::string> first_error(a.threads);
  std::vector<std::thread> pool;
  const auto t0 = Clock::now();
  for (int t = 0; t < a.threads; ++t) {
    pool.emplace_back([&, t] {
      const vitedge::Runner& r = *runners[a.mode == "each" ? t : 0];
      for (size_t k = static_cast<size_t>(t); !stop.load(std::memory_order_relaxed); ++k) {
        const size_t i = k % inputs.size();
        try {
          const std::vector<vitedge::Tensor> out = r.run(inputs[i]);
          if (!identical(out, reference[i], worst[t])) mismatches.fetch_add(1);
          runs.fetch_add(1);
          images.fetch_add(batch_of[i]);
        } catch (const std::exception& e) {
          if (errors.fetch_add(1) == 0 || first_error[t].empty()) first_error[t] = e.what();
        }
      }
    });
  }

  ordered_json samples = ordered_json::array();
  std::vector<double> xs, ys;
  double rss_warm = -1, rss_end = 0, rss_peak = 0;
  int64_t images_at_warm = 0;
  double t_warm = 0;
  for (int s = 1;; ++s) {
    std::this_thread::sleep_until(t0 + std::chrono::milliseconds(static_cast<int64_t>(s * 1000)));
    const double t = std::chrono::duration<double>(Clock::now() - t0).count();
    const double rss = rss_mib();
    const int64_t done = images.load();
    samples.push_back({{"t_s", t}, {"rss_mb", rss}, {"images", done}});
    rss_peak = std::max(rss_peak, rss);
    rss_end = rss;
    if (t >= a.warmup_seconds) {
      if (rss_warm < 0) rss_warm = rss, images_at_warm = done, t_warm = t;
      xs.push_back(t / 60.0);
      ys.push_back(rss);
    }
    if (t >= a.seconds) break;
  }
  stop = true;
  for (auto& th : pool) th.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  double max_abs = 0;
  for (double w : worst) max_abs = std::max(max_abs, w);
  std::string err;
  for (const auto& e : first_error)
    if (!e.empty()) err = e;

  ordered_json j;
  j["artifact"] = a.artifact;
  j["mode"] = a.mode == "shared" ? "one Runner shared by all threads" : "one Runner per thread";
  j["caller_threads"] = a.threads;
  j["intra_op_threads"] = a.intra_op;
  j["inputs"] = {{"images", a.images.size()}, {"batches", batch_of}};
  j["seconds"] = elapsed;
  j["warmup_seconds"] = a.warmup_seconds;
  j["runs"] = runs.load();
  j["images"] = images.load();
  j["throughput_ips"] = images.load() / elapsed;
  j["throughput_after_warmup_ips"] = rss_warm >= 0 && elapsed > t_warm ? (images.load() - images_at_warm) / (elapsed - t_warm) : 0.0;
  j["mismatches"] = mismatches.load();
  j["max_abs_diff"] = max_abs;
  j["errors"] = errors.load();
  j["first_error"] = err;
  j["rss_mb"] = {{"before_open", rss_before_open},
                 {"after_warmup", rss_warm},
                 {"end", rss_end},
                 {"peak", rss_peak},
                 {"slope_mb_per_min_after_warmup", slope(xs, ys)},
                 {"slope_mb_per_min_last_half", slope(std::vector<double>(xs.begin() + xs.size() / 2, xs.end()),
                                                      std::vector<double>(ys.begin() + ys.size() / 2, ys.end()))}};
  j["samples"] = samples;
  j["cpu_count"] = std::thread::hardware_concurrency();
  const std::string text = j.dump(2) + "\n";
  if (!a.json_out.empty()) {
    std::ofstream out(a.json_out);
    out << text;
    if (!out) throw vitedge::Error("cannot write " + a.json_out);
  }
  std::cout << text;
  if (mismatches.load() || errors.load()) {
    std::cerr << "vitedge-load: error: " << mismatches.load() << " output(s) differ from single-threaded, "
              << errors.load() << " error(s)" << (err.empty() ? "" : ": " + err) << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  try {
    a = parse(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "vitedge-load: error: " << e.what() << "\n";
    return 2;
  }
  try {
    return load(a);
  } catch (const std::exception& e) {
    std::cerr << "vitedge-load: error: " << e.what() << "\n";
    return 1;
  }
}
