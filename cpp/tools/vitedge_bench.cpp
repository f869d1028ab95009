// vitedge-bench: time an exported artifact with the C++ runner and print the bench JSON
// (schema shared with the Python side, the bench result schema of vitedge.bench).
//
// Units: latency in milliseconds (std::chrono::steady_clock, one sample per run() call, batch included);
// throughput_ips = batch * 1000 / mean latency; peak_rss_mb and artifact_mb in MiB (2^20 bytes);
// percentiles interpolate linearly between closest ranks (numpy.percentile's default).
// Exit codes: 0 ok, 1 runtime error (vitedge::Error), 2 usage error; errors are one line on stderr.
#include <sched.h>
#include <sys/resource.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "backend.h"  // internal: time_backend_loop for --bare
#include "vitedge/runner.h"

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

namespace {

constexpr const char* kUsage =
    "usage: vitedge-bench ARTIFACT [--image PATH] [--batch N] [--threads N] [--warmup N] [--iters N]\n"
    "                     [--json OUT] [--dump-output FILE] [--seed N] [--no-verify] [--device D] [--bare]\n"
    "                     [--key PUB.pem]... [--trust-code]\n"
    "  Times ITERS runs (after WARMUP untimed runs) of a vitedge artifact and prints the bench JSON.\n"
    "  ARTIFACT            the artifact folder (manifest.json + model file) or the model file in it\n"
    "  --image PATH        preprocess this image (manifest preprocessing) and replicate it to the batch;\n"
    "                      default: standard-normal random input (seeded by --seed, default 0)\n"
    "  --batch N           batch size (default 1)\n"
    "  --threads N         intra-op threads, 0 = runtime default (default 0)\n"
    "  --device D          cpu (default), cuda or cuda:N (libtorch backends)\n"
    "  --bare              time the backend's own run call in a loop (no Runner checks or copies): the\n"
    "                      baseline for the runner's overhead; runtime is reported as <runtime>-bare\n"
    "  --warmup N          untimed runs first (default 10)\n"
    "  --iters N           timed runs (default 50)\n"
    "  --json OUT          also write the JSON to OUT\n"
    "  --dump-output FILE  write the first output of the first timed run as raw little-endian float32 to FILE,\n"
    "                      and its shape to FILE.json\n"
    "  --no-verify         skip the SHA-256 check of the artifact files against manifest.json (checked by default)\n"
    "  --key PUB.pem       trusted public key (repeatable): the artifact's model.sig must verify with one of them\n"
    "                      and cover every file, before anything is loaded\n"
    "  --trust-code        without --key, load a TorchScript / AOTInductor artifact anyway (they run code when\n"
    "                      loaded; refused by default)\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string artifact, image, json_out, dump;
  int batch = 1, threads = 0, warmup = 10, iters = 50;
  uint64_t seed = 0;
  bool verify = true;
  std::vector<std::string> keys;
  bool trust_code = false;
  bool bare = false;
  std::string device = "cpu";
};

long long parse_int(const std::string& flag, const std::string& v, long long lo, long long hi) {
  size_t pos = 0;
  long long n = 0;
  try {
    n = std::stoll(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (v.empty() || pos != v.size()) throw UsageError(flag + " expects an integer, got '" + v + "'");
  if (n < lo || n > hi)
    throw UsageError(flag + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v);
  return n;
}

Args parse_args(int argc, char** argv) {
  Args a;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (arg == "--no-verify") {
      a.verify = false;
      continue;
    }
    if (arg == "--trust-code") {
      a.trust_code = true;
      continue;
    }
    if (arg == "--bare") {
      a.bare = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      positional.push_back(arg);
      continue;
    }
    std::string value;
    auto eq = arg.find('=');
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else {
      static const std::set<std::string> known{"--image", "--batch", "--threads", "--warmup",
                                               "--iters", "--json",  "--dump-output", "--seed", "--device",
                                               "--key"};
      if (!known.count(arg)) throw UsageError("unknown option " + arg);
      if (i + 1 >= argc) throw UsageError(arg + " needs a value");
      value = argv[++i];
    }
    if (arg == "--image") a.image = value;
    else if (arg == "--batch") a.batch = static_cast<int>(parse_int(arg, value, 1, 1 << 20));
    else if (arg == "--threads") a.threads = static_cast<int>(parse_int(arg, value, 0, 4096));
    else if (arg == "--warmup") a.warmup = static_cast<int>(parse_int(arg, value, 0, 1 << 24));
    else if (arg == "--iters") a.iters = static_cast<int>(parse_int(arg, value, 1, 1 << 24));
    else if (arg == "--json") a.json_out = value;
    else if (arg == "--dump-output") a.dump = value;
    else if (arg == "--device") a.device = value;
    else if (arg == "--key") a.keys.push_back(value);
    else if (arg == "--seed") a.seed = static_cast<uint64_t>(parse_int(arg, value, 0, INT64_MAX));
    else throw UsageError("unknown option " + arg);
    if ((arg == "--image" || arg == "--json" || arg == "--dump-output" || arg == "--key") && value.empty())
      throw UsageError(arg + " needs a non-empty value");
  }
  if (a.bare && !a.dump.empty()) throw UsageError("--bare and --dump-output cannot be combined");
  if (positional.size() != 1)
    throw UsageError(positional.empty() ? "missing ARTIFACT (see --help)"
                                        : "expected one ARTIFACT, got " + std::to_string(positional.size()));
  a.artifact = positional[0];
  return a;
}

// ---- machine info ---------------------------------------------------------------------------------------

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

ordered_json machine_info() {
  // ISA features that change results (AVX2, AVX-512, VNNI, BF16, AMX), in this order when present: the same list as
  // vitedge/machine.py ISA_FLAGS, so the C++ and Python JSON agree.
  static const char* kFlags[] = {"avx2",     "fma",      "avx512f",  "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                 "amx_tile", "amx_int8", "amx_bf16", "asimd",    "asimddp",     "sve"};
  std::string cpu = "unknown";
  std::set<std::string> present;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  bool have_flags = false;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = trim(line.substr(0, colon)), value = trim(line.substr(colon + 1));
    if (cpu == "unknown" && (key == "model name" || key == "Model name" || key == "Hardware")) cpu = value;
    if (!have_flags && (key == "flags" || key == "Features")) {
      std::istringstream ss(value);
      for (std::string f; ss >> f;) present.insert(f);
      have_flags = true;
    }
  }
  ordered_json flags = ordered_json::array();
  for (const char* f : kFlags)
    if (present.count(f)) flags.push_back(f);
  std::string os = "unknown", arch = "unknown";
  struct utsname u {};
  if (uname(&u) == 0) {
    os = std::string(u.sysname) + " " + u.release;  // as Python's f"{platform.system()} {platform.release()}"
    arch = u.machine;
  }
  // Logical CPUs this process may run on (as len(os.sched_getaffinity(0)) in Python).
  unsigned cores = std::thread::hardware_concurrency();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) cores = CPU_COUNT(&set);
  ordered_json m;
  m["cpu"] = cpu;
  m["cores"] = std::max(1u, cores);
  m["flags"] = flags;
  m["os"] = os;
  m["arch"] = arch;
  return m;
}

constexpr double kMiB = 1024.0 * 1024.0;

double peak_rss_mib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) * 1024.0 / kMiB;  // Linux: ru_maxrss in KiB
}

double artifact_mib(const std::string& dir, const vitedge::Manifest& m) {
  std::set<std::string> names;
  for (const auto& kv : m.file_bytes) names.insert(kv.first);
  names.insert(m.artifact);
  double bytes = 0;
  for (const auto& n : names) {
    std::error_code ec;
    const auto size = fs::file_size(fs::path(dir) / n, ec);
    if (!ec) bytes += static_cast<double>(size);
  }
  return bytes / kMiB;
}

// ---- input / output -------------------------------------------------------------------------------------

vitedge::Tensor make_input(const Args& a, const vitedge::Manifest& m) {
  const auto& spec = m.inputs.front();
  if (!a.image.empty()) {
    if (!m.preprocessing) throw vitedge::Error("the manifest has no preprocessing block; --image cannot be used");
    vitedge::Tensor one = vitedge::load_image(a.image, *m.preprocessing);
    vitedge::Tensor t;
    t.shape = one.shape;
    t.shape[0] = a.batch;
    t.data.reserve(one.data.size() * a.batch);
    for (int b = 0; b < a.batch; ++b) t.data.insert(t.data.end(), one.data.begin(), one.data.end());
    return t;
  }
  vitedge::Tensor t;
  t.shape = spec.shape;
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] >= 0) continue;
    if (i == 0) t.shape[i] = a.batch;
    else if (m.preprocessing && t.shape.size() == 4 && i >= 2) t.shape[i] = i == 2 ? m.preprocessing->height
                                                                                   : m.preprocessing->width;
    else throw vitedge::Error("input dimension " + std::to_string(i) + " is dynamic and the manifest gives no size for it");
  }
  if (spec.shape[0] >= 0 && spec.shape[0] != a.batch)
    throw vitedge::Error("this artifact has a fixed batch of " + std::to_string(spec.shape[0]) + ", --batch " +
                         std::to_string(a.batch) + " cannot be used");
  std::mt19937_64 rng(a.seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  t.data.resize(static_cast<size_t>(t.numel()));
  for (float& v : t.data) v = normal(rng);
  return t;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw vitedge::Error("cannot write " + path + ": " + std::strerror(errno));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw vitedge::Error("cannot write " + path);
}

void dump_output(const std::string& path, const vitedge::Tensor& t, const std::string& name) {
  std::string bytes(t.data.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), t.data.data(), bytes.size());
  const uint16_t probe = 1;
  if (*reinterpret_cast<const uint8_t*>(&probe) != 1)  // big-endian host: write little-endian anyway
    for (size_t i = 0; i < bytes.size(); i += 4) std::reverse(bytes.begin() + i, bytes.begin() + i + 4);
  write_file(path, bytes);
  ordered_json meta;
  meta["name"] = name;
  meta["shape"] = t.shape;
  meta["dtype"] = "float32";
  meta["byteorder"] = "little";
  write_file(path + ".json", meta.dump(2) + "\n");
}

int bench(const Args& a) {
  vitedge::Options opt;
  opt.threads = a.threads;
  opt.verify = a.verify;
  opt.trusted_keys = a.keys;
  opt.allow_unsigned_code = a.trust_code;
  opt.device = a.device;
  auto runner = vitedge::Runner::open(a.artifact, opt);
  const auto& m = runner->manifest();
  const vitedge::Tensor input = make_input(a, m);

  std::vector<double> ms;
  if (a.bare) ms = vitedge::time_backend_loop(*runner, input, a.warmup, a.iters);
  for (int i = 0; i < a.warmup && !a.bare; ++i) runner->run(input);
  ms.reserve(a.iters);
  for (int i = 0; i < a.iters && !a.bare; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<vitedge::Tensor> out = runner->run(input);
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (i == 0 && !a.dump.empty()) {
      if (out.empty()) throw vitedge::Error("the model returned no outputs to dump");
      dump_output(a.dump, out.front(), m.outputs.empty() ? "" : m.outputs.front().name);
    }
  }
  const vitedge::Stats s = vitedge::summarize(ms);

  ordered_json j;
  j["artifact"] = runner->artifact_dir();  // the folder, as vitedge bench reports it
  j["runtime"] = runner->runtime() + (a.bare ? "-cpp-bare" : "-cpp");
  j["device"] = a.device;
  j["batch"] = a.batch;
  j["threads"] = a.threads;
  j["warmup"] = a.warmup;
  j["iters"] = a.iters;
  j["latency_ms"] = {{"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90}, {"p99", s.p99}, {"min", s.min}, {"max", s.max}};
  j["throughput_ips"] = s.mean > 0 ? a.batch * 1000.0 / s.mean : 0.0;
  j["peak_rss_mb"] = peak_rss_mib();
  j["artifact_mb"] = artifact_mib(runner->artifact_dir(), m);
  j["machine"] = machine_info();
  const std::string text = j.dump(2) + "\n";
  if (!a.json_out.empty()) write_file(a.json_out, text);
  std::cout << text << std::flush;
  return 0;
}

// One line on stderr, whatever the message holds.
void report(const std::string& msg) {
  std::string line = msg;
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::replace(line.begin(), line.end(), '\r', ' ');
  std::cerr << "vitedge-bench: error: " << line << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const UsageError& e) {
    report(e.what());
    return 2;
  }
  try {
    return bench(args);
  } catch (const vitedge::Error& e) {
    report(e.what());
  } catch (const std::exception& e) {
    report(std::string("unexpected: ") + e.what());
  }
  return 1;
}
