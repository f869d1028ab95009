// classify ARTIFACT_DIR IMAGE...: top-5 labels and softmax scores per image (vitedge runner example).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <vitedge/runner.h>

int main(int argc, char** argv) {
  if (argc < 3) return std::fprintf(stderr, "usage: classify ARTIFACT_DIR IMAGE...\n"), 2;
  try {
    auto runner = vitedge::Runner::open(argv[1]);
    const auto& labels = runner->manifest().labels;
    for (int i = 2; i < argc; ++i) {
      const auto outputs = runner->run(runner->load_image(argv[i]));
      const std::vector<float>& z = vitedge::output(outputs, "logits").data;
      std::vector<double> p(z.size());  // softmax
      const float zmax = *std::max_element(z.begin(), z.end());
      for (size_t k = 0; k < z.size(); ++k) p[k] = std::exp(double(z[k]) - zmax);
      const double sum = std::accumulate(p.begin(), p.end(), 0.0);
      std::vector<size_t> idx(p.size());
      std::iota(idx.begin(), idx.end(), 0);
      const size_t k = std::min<size_t>(5, idx.size());
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
      std::printf("%s\n", argv[i]);
      for (size_t j = 0; j < k; ++j)
        std::printf("  %zu  %-24s %.4f\n", idx[j], idx[j] < labels.size() ? labels[idx[j]].c_str() : "-", p[idx[j]] / sum);
    }
  } catch (const vitedge::Error& e) {
    return std::fprintf(stderr, "classify: error: %s\n", e.what()), 1;
  }
  return 0;
}
