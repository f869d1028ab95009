// Image decoding (stb_image) and preprocessing per CONVENTIONS.md.
// This is the one translation unit holding the stb implementations.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
// Decoders built: JPEG, PNG, BMP only. stb_image's other decoders (GIF, PSD, PIC, HDR, TGA, PNM) have had
// memory-safety bugs (e.g. CVE-2023-45661..45667 in GIF) and photos do not need them: less attack surface.
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#include <stb/stb_image.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>
#include <cstdint>
#include <limits>
#include <memory>

#include "image.h"
#include "vitedge/runner.h"

namespace vitedge {

namespace {

using Pixels = std::unique_ptr<stbi_uc, void (*)(void*)>;

// ---- Pillow-compatible bilinear resize ----------------------------------------------------------------
// Python preprocesses with PIL's Image.resize(..., BILINEAR); to give the same uint8 pixels this follows
// Pillow's libImaging/Resample.c (precompute_coeffs, normalize_coeffs_8bpc, ImagingResampleHorizontal/
// Vertical_8bpc): a triangle filter whose support widens with the downscale factor (antialiasing), weights
// normalised per output pixel then rounded to 22-bit fixed point, a horizontal pass to uint8 then a vertical one.
constexpr int kPrecisionBits = 32 - 8 - 2;

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // per output index: first input index, count
  std::vector<int> k;       // ksize fixed-point weights per output index
};

Coeffs pil_coeffs(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 1.0 * filterscale;  // bilinear support 1
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.assign(static_cast<size_t>(out_size) * 2, 0);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale, ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    std::fill(w.begin(), w.end(), 0.0);
    for (int x = 0; x < xmax; ++x) {
      double t = (x + xmin - center + 0.5) * ss;
      if (t < 0.0) t = -t;
      w[x] = t < 1.0 ? 1.0 - t : 0.0;
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) w[x] /= ww;
    for (int x = 0; x < c.ksize; ++x) {
      const double v = w[x] * (1 << kPrecisionBits);
      c.k[static_cast<size_t>(xx) * c.ksize + x] = static_cast<int>(v < 0 ? -0.5 + v : 0.5 + v);
    }
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

// rgb: h x w x 3 -> out: oh x ow x 3, as PIL's im.resize((ow, oh), Image.BILINEAR) on an RGB image.
void pil_resize_bilinear(const stbi_uc* rgb, int w, int h, stbi_uc* out, int ow, int oh) {
  const Coeffs ch = pil_coeffs(w, ow), cv = pil_coeffs(h, oh);
  const bool need_h = ow != w, need_v = oh != h;
  // Horizontal pass over the rows the vertical pass reads (all of them when it is skipped).
  const int y_first = need_v ? cv.bounds[0] : 0;
  const int y_last = need_v ? cv.bounds[oh * 2 - 2] + cv.bounds[oh * 2 - 1] : h;
  std::vector<stbi_uc> tmp;
  const stbi_uc* src = rgb;
  int src_w = w, row0 = 0;
  if (need_h) {
    tmp.resize(static_cast<size_t>(y_last - y_first) * ow * 3);
    for (int y = y_first; y < y_last; ++y)
      for (int xx = 0; xx < ow; ++xx) {
        const int xmin = ch.bounds[xx * 2], xmax = ch.bounds[xx * 2 + 1];
        const int* k = &ch.k[static_cast<size_t>(xx) * ch.ksize];
        for (int c = 0; c < 3; ++c) {
          int ss = 1 << (kPrecisionBits - 1);
          for (int x = 0; x < xmax; ++x) ss += rgb[(static_cast<size_t>(y) * w + x + xmin) * 3 + c] * k[x];
          tmp[(static_cast<size_t>(y - y_first) * ow + xx) * 3 + c] = clip8(ss);
        }
      }
    src = tmp.data();
    src_w = ow;
    row0 = y_first;
  }
  if (!need_v) {
    std::copy(src, src + static_cast<size_t>(oh) * ow * 3, out);
    return;
  }
  for (int yy = 0; yy < oh; ++yy) {
    const int ymin = cv.bounds[yy * 2] - row0, ymax = cv.bounds[yy * 2 + 1];
    const int* k = &cv.k[static_cast<size_t>(yy) * cv.ksize];
    for (int xx = 0; xx < ow; ++xx)
      for (int c = 0; c < 3; ++c) {
        int ss = 1 << (kPrecisionBits - 1);
        for (int y = 0; y < ymax; ++y) ss += src[(static_cast<size_t>(y + ymin) * src_w + xx) * 3 + c] * k[y];
        out[(static_cast<size_t>(yy) * ow + xx) * 3 + c] = clip8(ss);
      }
  }
}

[[noreturn]] void decode_failed(const std::string& label) {
  const char* reason = stbi_failure_reason();
  throw Error("cannot decode image " + label + ": " + (reason ? reason : "unknown error"));
}

// stb_image 2.27 (Debian 12's libstb) builds a JPEG Huffman table without checking that the 16 code-length
// counts of a DHT table sum to <= 256: a crafted file writes past stbi__huffman::size[257] (found by
// cpp/fuzz/fuzz_image, UBSan "index 257 out of bounds"). Walk the JPEG segments as stb does and refuse such a
// table before stb sees it; likewise over-subscribed code lengths and scans using undefined tables (stb then
// decodes with uninitialised memory). Bytes past the end read as 0, as stb's reader returns them.
void check_jpeg_huffman_tables(const unsigned char* b, size_t n, const std::string& label) {
  // stb's JPEG test: one or more 0xFF, then SOI (0xD8). Anything else is not decoded as JPEG.
  size_t i = 0;
  while (i < n && b[i] == 0xFF) ++i;
  if (i == 0 || i >= n || b[i] != 0xD8) return;
  ++i;
  auto at = [&](size_t k) -> unsigned { return k < n ? b[k] : 0u; };
  auto corrupt = [&](const std::string& why) { throw Error("cannot decode image " + label + ": corrupt JPEG (" + why + ")"); };
  bool defined[2][4] = {{false, false, false, false}, {false, false, false, false}};  // [DC/AC][table id]
  bool progressive = false;
  while (i + 1 < n) {
    if (b[i] != 0xFF) {  // entropy-coded data (or junk) between segments
      ++i;
      continue;
    }
    const unsigned marker = b[i + 1];
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0x00 || marker == 0x01 || marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7)) {
      i += 2;  // stuffed 0xFF, TEM, SOI, RSTn: no length field
      continue;
    }
    if (marker == 0xD9) return;  // EOI
    const size_t len = (at(i + 2) << 8) | at(i + 3);  // includes its own two bytes
    if (marker == 0xC4) {  // DHT: tables of (Tc/Th, 16 counts, sum(counts) symbol values)
      const size_t end = i + 2 + len;
      for (size_t p = i + 4; p < end;) {
        size_t total = 0, code = 0;
        for (size_t k = 0; k < 16; ++k) {
          total += at(p + 1 + k);
          // Kraft: the codes of length k+1 must fit in k+1 bits, else stb's decoder indexes past its tables.
          code += at(p + 1 + k);
          if (code > (size_t{1} << (k + 1))) corrupt("Huffman code lengths over-subscribed");
          code <<= 1;
        }
        if (total > 256) corrupt("Huffman table with " + std::to_string(total) + " codes, at most 256");
        const unsigned tc = at(p) >> 4, th = at(p) & 15;
        if (tc <= 1 && th <= 3) defined[tc][th] = true;
        p += 17 + total;
      }
    }
    if (marker == 0xC2) progressive = true;  // SOF2
    if (marker == 0xDA) {  // SOS: each Huffman table the scan decodes with must have been defined (stb 2.27
      // would otherwise decode with uninitialised tables: fuzz_image, "index ... out of bounds for stbi_uc[256]")
      const unsigned ns = at(i + 4), ss = at(i + 5 + 2 * ns), ah = at(i + 7 + 2 * ns) >> 4;
      const bool uses_dc = !progressive || (ss == 0 && ah == 0), uses_ac = !progressive || ss != 0;
      for (unsigned k = 0; k < ns; ++k) {
        const unsigned td = at(i + 6 + 2 * k) >> 4, ta = at(i + 6 + 2 * k) & 15;
        if ((uses_dc && td <= 3 && !defined[0][td]) || (uses_ac && ta <= 3 && !defined[1][ta]))
          corrupt("scan uses a Huffman table that was not defined");
      }
    }
    i += 2 + std::max<size_t>(len, 2);
  }
}

// Header dimensions before decoding, so that a small file claiming a huge image is refused cheaply.
void check_decoded_size(int w, int h, const std::string& label) {
  if (static_cast<int64_t>(w) * h > kMaxImagePixels)
    throw Error("cannot decode image " + label + ": " + std::to_string(w) + "x" + std::to_string(h) +
                " pixels is over the limit of " + std::to_string(kMaxImagePixels) + " pixels");
}

// ---- EXIF orientation (the rule is in image.h; vitedge/data.py's exif_orientation is the same code) ----------
// All reads go through these bounds-checked helpers: an offset past the end yields "absent", never a read.
struct Bytes {
  const unsigned char* p;
  size_t n;
  bool has(size_t off, size_t len) const { return off <= n && len <= n - off; }
  unsigned u16(size_t off, bool le) const {
    return le ? (p[off] | (p[off + 1] << 8)) : ((p[off] << 8) | p[off + 1]);
  }
  uint32_t u32(size_t off, bool le) const {
    const uint32_t a = p[off], b = p[off + 1], c = p[off + 2], d = p[off + 3];
    return le ? (a | (b << 8) | (c << 16) | (d << 24)) : ((a << 24) | (b << 16) | (c << 8) | d);
  }
  bool starts(size_t off, const char* lit, size_t len) const { return has(off, len) && std::memcmp(p + off, lit, len) == 0; }
};

constexpr char kExifPrefix[] = "Exif\0\0";  // 6 bytes (the literal's own NUL not counted)

// Bytes per value of the TIFF field types Pillow's ImageFileDirectory_v2 reads (0: a type it skips).
size_t tiff_unit(unsigned type) {
  switch (type) {
    case 1: case 2: case 6: case 7: return 1;    // BYTE, ASCII, SBYTE, UNDEFINED
    case 3: case 8: return 2;                    // SHORT, SSHORT
    case 4: case 9: case 11: case 13: return 4;  // LONG, SLONG, FLOAT, IFD
    case 5: case 10: case 12: case 16: return 8; // RATIONAL, SRATIONAL, DOUBLE, LONG8
    default: return 0;
  }
}

int tiff_orientation(Bytes t) {
  // Pillow strips "Exif\0\0" once or twice from the start of the EXIF data (Image.Exif.load); one was
  // removed by the caller (JPEG) or never there (PNG), so strip up to two here: the same result.
  for (int k = 0; k < 2 && t.starts(0, kExifPrefix, 6); ++k) t = Bytes{t.p + 6, t.n - 6};
  if (!t.has(0, 8)) return 1;
  bool le;
  if (t.starts(0, "II*\0", 4)) le = true;
  else if (t.starts(0, "MM\0*", 4)) le = false;
  else return 1;
  const size_t ifd = t.u32(4, le);
  if (!t.has(ifd, 2)) return 1;
  const size_t count = t.u16(ifd, le);
  // IFD0's entries in order, as Pillow's ImageFileDirectory_v2.load reads them (only IFD0: no chain to loop on).
  std::vector<bool> stored(65536, false);
  uint64_t total = 0;  // bytes of out-of-line values so far
  for (size_t k = 0; k < count; ++k) {
    const size_t e = ifd + 2 + 12 * k;  // <= 2^32 + 2 + 12 * 65535: no overflow in a 64-bit size_t
    if (!t.has(e, 12)) return 1;        // an incomplete entry ends the IFD
    const unsigned tag = t.u16(e, le), type = t.u16(e + 2, le);
    if (stored[tag]) continue;          // a repeated tag: the first stored one counts
    const uint64_t unit = tiff_unit(type), size = unit * t.u32(e + 4, le);
    if (unit == 0 || size == 0) continue;  // unknown type, or no value: skipped
    size_t at = e + 8;                     // the value, inline when it fits in 4 bytes
    if (size > 4) {
      total += size;
      if (total > t.n) continue;  // more value bytes than the block holds: this entry skipped
      at = t.u32(e + 8, le);
      if (!t.has(at, size)) return 1;  // a value past the end ends the IFD
    }
    stored[tag] = true;
    if (tag != 0x0112) continue;
    int64_t v = 0;  // the first value; only integer types count (Pillow's BYTE reads as bytes)
    switch (type) {
      case 3: v = t.u16(at, le); break;
      case 4: case 13: v = t.u32(at, le); break;
      case 6: v = static_cast<int8_t>(t.p[at]); break;
      case 8: v = static_cast<int16_t>(t.u16(at, le)); break;
      case 9: v = static_cast<int32_t>(t.u32(at, le)); break;
      case 16: {
        const uint64_t a = t.u32(at, le), b = t.u32(at + 4, le);
        const uint64_t u = le ? (a | (b << 32)) : ((a << 32) | b);
        v = u <= 8 ? static_cast<int64_t>(u) : 0;
        break;
      }
      default: return 1;
    }
    return v >= 1 && v <= 8 ? static_cast<int>(v) : 1;
  }
  return 1;
}

int jpeg_orientation(Bytes b) {
  // Segments from SOI up to the first SOS (0xDA) or EOI, as Pillow's JpegImageFile._open walks them.
  std::vector<unsigned char> exif;  // "Exif\0\0" APP1 payloads: the first whole, later ones appended (Pillow)
  bool found = false;
  size_t i = 2;
  while (true) {
    if (!b.has(i, 1) || b.p[i] != 0xFF) break;
    while (b.has(i, 1) && b.p[i] == 0xFF) ++i;  // fill bytes
    if (!b.has(i, 1)) break;
    const unsigned m = b.p[i++];
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length field
    if (m == 0xDA || m == 0xD9 || m == 0x00) break;
    if (!b.has(i, 2)) break;
    const size_t len = b.u16(i, false);  // counts its own two bytes
    if (len < 2 || !b.has(i, len)) break;
    if (m == 0xE1 && len - 2 >= 6 && b.starts(i + 2, kExifPrefix, 6)) {
      exif.insert(exif.end(), b.p + i + 8, b.p + i + len);
      found = true;
    }
    i += len;
  }
  return found ? tiff_orientation(Bytes{exif.data(), exif.size()}) : 1;
}

int png_orientation(Bytes b) {
  // Chunks after the signature up to IEND; the last eXIf chunk wins (Pillow reads them before and after IDAT).
  size_t i = 8, at = 0, len_at = 0;
  bool found = false;
  while (b.has(i, 8)) {
    const size_t len = b.u32(i, false);
    if (!b.has(i + 8, len) || !b.has(i + 8 + len, 4)) break;  // data and CRC must be there
    if (b.starts(i + 4, "IEND", 4)) break;
    if (b.starts(i + 4, "eXIf", 4)) {
      at = i + 8;
      len_at = len;
      found = true;
    }
    i += 12 + len;
  }
  return found ? tiff_orientation(Bytes{b.p + at, len_at}) : 1;
}

}  // namespace

int exif_orientation(const unsigned char* bytes, size_t size) {
  if (bytes == nullptr) return 1;
  const Bytes b{bytes, size};
  if (b.starts(0, "\xFF\xD8", 2)) return jpeg_orientation(b);
  if (b.starts(0, "\x89PNG\r\n\x1a\n", 8)) return png_orientation(b);
  return 1;
}

void apply_orientation(std::vector<unsigned char>& rgb, int& w, int& h, int orientation) {
  if (orientation < 2 || orientation > 8) return;
  const size_t W = static_cast<size_t>(w), H = static_cast<size_t>(h);
  const bool swap = orientation >= 5;
  const size_t ow = swap ? H : W, oh = swap ? W : H;
  std::vector<unsigned char> out(rgb.size());
  for (size_t y = 0; y < oh; ++y)
    for (size_t x = 0; x < ow; ++x) {
      size_t sy = 0, sx = 0;  // source pixel of output (y, x), as Pillow's Image.transpose
      switch (orientation) {
        case 2: sy = y; sx = W - 1 - x; break;          // FLIP_LEFT_RIGHT
        case 3: sy = H - 1 - y; sx = W - 1 - x; break;  // ROTATE_180
        case 4: sy = H - 1 - y; sx = x; break;          // FLIP_TOP_BOTTOM
        case 5: sy = x; sx = y; break;                  // TRANSPOSE
        case 6: sy = H - 1 - x; sx = y; break;          // ROTATE_270 (90 degrees clockwise)
        case 7: sy = H - 1 - x; sx = W - 1 - y; break;  // TRANSVERSE
        default: sy = x; sx = W - 1 - y; break;         // 8: ROTATE_90 (90 degrees counter-clockwise)
      }
      std::memcpy(&out[(y * ow + x) * 3], &rgb[(sy * W + sx) * 3], 3);
    }
  rgb.swap(out);
  w = static_cast<int>(ow);
  h = static_cast<int>(oh);
}

namespace {

Tensor preprocess(const stbi_uc* rgb, int w, int h, const Preprocessing& p, const std::string& label) {
  const int H = p.height, W = p.width;
  std::vector<stbi_uc> resized;
  int rw = w, rh = h;
  if (w != W || h != H) {
    // Cover (H, W) keeping the aspect ratio: factor max(H/h, W/w), output dims rounded half to even
    // (as Python's round() in vitedge.data), never below the target.
    const double s = std::max(static_cast<double>(H) / h, static_cast<double>(W) / w);
    const double rw_d = std::max<double>(W, std::nearbyint(w * s)), rh_d = std::max<double>(H, std::nearbyint(h * s));
    // An extreme aspect ratio (say 1 x 100000 to 224 x 224) would need a resized image of billions of pixels.
    if (rw_d * rh_d > static_cast<double>(kMaxImagePixels))
      throw Error("cannot resize image " + label + ": " + std::to_string(w) + "x" + std::to_string(h) +
                  " to cover " + std::to_string(W) + "x" + std::to_string(H) + " needs over " +
                  std::to_string(kMaxImagePixels) + " pixels (aspect ratio too extreme)");
    rw = static_cast<int>(rw_d);
    rh = static_cast<int>(rh_d);
    resized.resize(static_cast<size_t>(rw) * rh * 3);
    // Triangle (tent) filter = bilinear; when downscaling it widens to the scale factor (antialiased), as PIL.
    pil_resize_bilinear(rgb, w, h, resized.data(), rw, rh);
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

// Decode (stb_image, from memory) and preprocess; `label` names the image in errors.
Tensor decode_and_preprocess(const unsigned char* bytes, size_t size, const Preprocessing& p, const std::string& label) {
  if (p.height <= 0 || p.width <= 0) throw Error("preprocessing size must be positive");
  if (bytes == nullptr || size == 0) throw Error("cannot decode image " + label + ": no bytes");
  if (size > static_cast<size_t>(kMaxImageFileBytes))
    throw Error("cannot decode image " + label + ": over 2 GiB of encoded data");
  const int n = static_cast<int>(size);
  check_jpeg_huffman_tables(bytes, size, label);
  int w = 0, h = 0, channels_in_file = 0;
  if (!stbi_info_from_memory(bytes, n, &w, &h, &channels_in_file)) decode_failed(label);
  check_decoded_size(w, h, label);
  Pixels pixels(stbi_load_from_memory(bytes, n, &w, &h, &channels_in_file, 3), stbi_image_free);
  if (!pixels) decode_failed(label);
  check_decoded_size(w, h, label);
  // 16-bit PNG samples are already their high byte (stbi__convert_16_to_8: v >> 8), grey is replicated to RGB
  // and alpha dropped (req_comp 3). Then the EXIF orientation, before the resize (as Pillow's exif_transpose).
  const int orientation = exif_orientation(bytes, size);
  if (orientation == 1) return preprocess(pixels.get(), w, h, p, label);  // h x w x 3, 8-bit RGB
  std::vector<stbi_uc> rgb(pixels.get(), pixels.get() + static_cast<size_t>(w) * h * 3);
  pixels.reset();
  apply_orientation(rgb, w, h, orientation);
  return preprocess(rgb.data(), w, h, p, label);
}

}  // namespace

namespace {

const char* file_kind(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::vector<unsigned char> read_image_file(const std::string& path) {
  const std::string what = "cannot decode image " + path + ": ";
  // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one (a regular file
  // ignores the flag). O_NOCTTY: a terminal device never becomes our controlling terminal.
  const Fd f{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)};
  if (f.fd < 0) throw Error(what + "cannot open file (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) throw Error(what + "cannot stat file (" + std::strerror(errno) + ")");
  if (!S_ISREG(st.st_mode))
    throw Error(what + "it is " + file_kind(st.st_mode) + ", not a regular file; refusing to read it");
  if (st.st_size > kMaxImageFileBytes)
    throw Error(what + "the file is " + std::to_string(static_cast<long long>(st.st_size)) +
                " bytes, over the limit of " + std::to_string(kMaxImageFileBytes) + " bytes (2 GiB); not read");
  std::vector<unsigned char> bytes(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < bytes.size()) {  // read exactly the size fstat gave; a file that shrank meanwhile reads short
    const ssize_t r = ::read(f.fd, bytes.data() + got, bytes.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw Error(what + "read error (" + std::strerror(errno) + ")");
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  bytes.resize(got);
  return bytes;
}

Tensor load_image(const std::string& path, const Preprocessing& p) {
  const std::vector<unsigned char> bytes = read_image_file(path);
  return decode_and_preprocess(bytes.data(), bytes.size(), p, path);
}

Tensor load_image_from_memory(const unsigned char* bytes, size_t size, const Preprocessing& p) {
  return decode_and_preprocess(bytes, size, p, "<in memory>");
}

Tensor preprocess_rgb(const unsigned char* rgb, int width, int height, const Preprocessing& p) {
  static const std::string label = "<RGB buffer>";
  if (p.height <= 0 || p.width <= 0) throw Error("preprocessing size must be positive");
  if (rgb == nullptr) throw Error("preprocess_rgb: no pixel data (null pointer)");
  if (width <= 0 || height <= 0)
    throw Error("preprocess_rgb: image size must be positive, got " + std::to_string(width) + "x" + std::to_string(height));
  check_decoded_size(width, height, label);
  return preprocess(rgb, width, height, p, label);
}

}  // namespace vitedge
