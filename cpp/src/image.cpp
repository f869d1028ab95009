// Image decoding (stb_image) and preprocessing per CONVENTIONS.md.
// This is the one translation unit holding the stb implementations.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include <stb/stb_image.h>
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb/stb_image_resize.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "vitedge/runner.h"

namespace vitedge {

Tensor load_image(const std::string& path, const Preprocessing& p) {
  if (p.height <= 0 || p.width <= 0) throw Error("preprocessing size must be positive");
  int w = 0, h = 0, channels_in_file = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(stbi_load(path.c_str(), &w, &h, &channels_in_file, 3),
                                                   stbi_image_free);
  if (!pixels) {
    const char* reason = stbi_failure_reason();
    throw Error("cannot decode image " + path + ": " + (reason ? reason : "unknown error"));
  }
  const int H = p.height, W = p.width;
  const stbi_uc* rgb = pixels.get();  // h x w x 3, 8-bit RGB
  std::vector<stbi_uc> resized;
  int rw = w, rh = h;
  if (w != W || h != H) {
    // Cover (H, W) keeping the aspect ratio: factor max(H/h, W/w), output dims rounded half to even
    // (as Python's round() in vitedge.data), never below the target.
    const double s = std::max(static_cast<double>(H) / h, static_cast<double>(W) / w);
    rw = std::max(W, static_cast<int>(std::nearbyint(w * s)));
    rh = std::max(H, static_cast<int>(std::nearbyint(h * s)));
    resized.resize(static_cast<size_t>(rw) * rh * 3);
    // Triangle (tent) filter = bilinear; when downscaling it widens to the scale factor (antialiased, as PIL).
    const int ok = stbir_resize_uint8_generic(rgb, w, h, 0, resized.data(), rw, rh, 0, 3, STBIR_ALPHA_CHANNEL_NONE,
                                              0, STBIR_EDGE_CLAMP, STBIR_FILTER_TRIANGLE, STBIR_COLORSPACE_LINEAR,
                                              nullptr);
    if (!ok) throw Error("cannot resize image " + path);
    rgb = resized.data();
  }
  const int top = (rh - H) / 2, left = (rw - W) / 2;  // center crop, floor of the half difference
  Tensor t;
  t.shape = {1, 3, H, W};
  t.data.resize(static_cast<size_t>(3) * H * W);
  for (int c = 0; c < 3; ++c) {
    const float scale = p.scale, mean = p.mean[c], sd = p.std[c];
    float* dst = t.data.data() + static_cast<size_t>(c) * H * W;
    for (int y = 0; y < H; ++y) {
      const stbi_uc* row = rgb + (static_cast<size_t>(y + top) * rw + left) * 3 + c;
      for (int x = 0; x < W; ++x) {
        // float32 throughout, in exactly this order (built with -ffp-contract=off: no fused multiply-add).
        const float scaled = static_cast<float>(row[static_cast<size_t>(x) * 3]) * scale;
        const float centered = scaled - mean;
        dst[static_cast<size_t>(y) * W + x] = centered / sd;
      }
    }
  }
  return t;
}

}  // namespace vitedge
