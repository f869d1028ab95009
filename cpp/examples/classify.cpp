// classify [--key PUB.pem]... [--trust-code] ARTIFACT IMAGE...: top-5 labels and softmax scores per image
// (vitedge runner example). ARTIFACT: the artifact folder or the model file in it. --key: model.sig must verify with that public key (repeatable); --trust-code: load an
// unsigned TorchScript / AOTInductor artifact anyway (they run code when loaded).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>
#include <vitedge/runner.h>

int main(int argc, char** argv) {
  const char* usage = "usage: classify [--key PUB.pem]... [--trust-code] ARTIFACT IMAGE...\n"
                      "  ARTIFACT: the artifact folder (manifest.json + model file) or the model file in it\n";
  vitedge::Options options;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--key") {
      if (i + 1 >= argc || !*argv[i + 1]) return std::fprintf(stderr, "classify: --key needs a value\n%s", usage), 2;
      options.trusted_keys.push_back(argv[++i]);
    } else if (arg == "--trust-code") {
      options.allow_unsigned_code = true;
    } else if (arg.rfind("--", 0) == 0) {
      return std::fprintf(stderr, "classify: unknown option %s\n%s", arg.c_str(), usage), 2;
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() < 2) return std::fprintf(stderr, "%s", usage), 2;
  try {
    auto runner = vitedge::Runner::open(positional[0], options);
    const auto& labels = runner->manifest().labels;
    for (size_t i = 1; i < positional.size(); ++i) {
      const auto outputs = runner->run(runner->load_image(positional[i]));
      const std::vector<float>& z = vitedge::output(outputs, "logits").data;
      std::vector<double> p(z.size());  // softmax
      const float zmax = *std::max_element(z.begin(), z.end());
      for (size_t k = 0; k < z.size(); ++k) p[k] = std::exp(double(z[k]) - zmax);
      const double sum = std::accumulate(p.begin(), p.end(), 0.0);
      std::vector<size_t> idx(p.size());
      std::iota(idx.begin(), idx.end(), 0);
      const size_t k = std::min<size_t>(5, idx.size());
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
      std::printf("%s\n", positional[i].c_str());
      for (size_t j = 0; j < k; ++j)
        std::printf("  %zu  %-24s %.4f\n", idx[j], idx[j] < labels.size() ? labels[idx[j]].c_str() : "-", p[idx[j]] / sum);
    }
  } catch (const vitedge::Error& e) {
    return std::fprintf(stderr, "classify: error: %s\n", e.what()), 1;
  }
  return 0;
}
