// Latency statistics shared by vitedge-bench and the unit tests.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "vitedge/runner.h"

namespace vitedge {

double percentile(std::vector<double> samples, double q) {
  if (samples.empty()) throw Error("percentile of an empty sample");
  if (!(q >= 0.0 && q <= 100.0)) throw Error("percentile q must be in [0, 100]");
  std::sort(samples.begin(), samples.end());
  // numpy.percentile(method="linear"): virtual index (n - 1) * q / 100, interpolate between neighbours.
  const double rank = (static_cast<double>(samples.size()) - 1.0) * q / 100.0;
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, samples.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return samples[lo] + (samples[hi] - samples[lo]) * frac;
}

Stats summarize(const std::vector<double>& samples) {
  if (samples.empty()) throw Error("statistics of an empty sample");
  Stats s;
  s.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / static_cast<double>(samples.size());
  s.p50 = percentile(samples, 50);
  s.p90 = percentile(samples, 90);
  s.p99 = percentile(samples, 99);
  auto [mn, mx] = std::minmax_element(samples.begin(), samples.end());
  s.min = *mn;
  s.max = *mx;
  return s;
}

}  // namespace vitedge
