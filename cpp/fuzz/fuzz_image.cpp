// libFuzzer target: vitedge::load_image_from_memory (stb_image decode of any format it accepts, cover-resize,
// center-crop, normalisation) on arbitrary bytes. The first two bytes pick the target size (H, W in 1..128)
// so the resize and crop paths are exercised at many ratios; the rest is the encoded image. Only
// vitedge::Error may escape; a returned tensor must have shape (1, 3, H, W), 3*H*W values, all finite.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "vitedge/runner.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  vitedge::Preprocessing p;
  p.height = 1 + data[0] % 128;
  p.width = 1 + data[1] % 128;
  p.mean = {0.485f, 0.456f, 0.406f};
  p.std = {0.229f, 0.224f, 0.225f};
  vitedge::Tensor t;
  try {
    t = vitedge::load_image_from_memory(data + 2, size - 2, p);
  } catch (const vitedge::Error&) {
    return 0;
  }
  if (t.shape.size() != 4 || t.shape[0] != 1 || t.shape[1] != 3 || t.shape[2] != p.height || t.shape[3] != p.width)
    __builtin_trap();
  if (t.data.size() != static_cast<size_t>(3) * p.height * p.width) __builtin_trap();
  for (float v : t.data)
    if (!std::isfinite(v)) __builtin_trap();
  return 0;
}
