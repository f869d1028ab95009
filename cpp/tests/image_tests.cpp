// Image input tests (issue 17): EXIF orientation, 16-bit PNG, non-regular and oversized files.
//
//   vitedge_image_tests                          run the checks below; exit code = number of failures
//   vitedge_image_tests --dump IMG H W OUT.f32   load_image(IMG) at H x W with the default preprocessing
//                                                (scale 1/255, mean 0, std 1) written as float32 CHW to OUT.f32;
//                                                on a refusal one line on stderr, exit 1 (image_parity.py uses it)
//   vitedge_image_tests --orientation FILE...    exif_orientation of each file's bytes, one per line
//
// No framework: CHECK macros as unit_tests.cpp. Runs under the sanitizers (Makefile cpp-sanitize).
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <iostream>
#include <string>
#include <vector>

#include "image.h"  // internal (src/): exif_orientation, apply_orientation, read_image_file
#include "vitedge/runner.h"
#include "check.h"

namespace {

using vitedge_test::failures;


using Bytes = std::vector<unsigned char>;

void put16(Bytes& b, unsigned v, bool le) {
  if (le) b.insert(b.end(), {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8)});
  else b.insert(b.end(), {static_cast<unsigned char>(v >> 8), static_cast<unsigned char>(v)});
}
void put32(Bytes& b, uint32_t v, bool le) {
  if (le) {
    put16(b, v & 0xFFFF, true);
    put16(b, v >> 16, true);
  } else {
    put16(b, v >> 16, false);
    put16(b, v & 0xFFFF, false);
  }
}

struct Entry {
  unsigned tag, type;
  uint32_t count, value;
};

// TIFF data: header, IFD0 at `ifd` (8 = right after the header) with `entries`, next-IFD offset 0.
Bytes tiff(const std::vector<Entry>& entries, bool le, uint32_t ifd = 8, int count = -1) {
  Bytes t;
  const char* magic = le ? "II*\0" : "MM\0*";
  t.insert(t.end(), magic, magic + 4);
  put32(t, ifd, le);
  put16(t, count < 0 ? static_cast<unsigned>(entries.size()) : static_cast<unsigned>(count), le);
  for (const Entry& e : entries) {
    put16(t, e.tag, le);
    put16(t, e.type, le);
    put32(t, e.count, le);
    if (e.type == 3 || e.type == 8) {  // 2-byte values, left-justified in the 4-byte field
      put16(t, e.value, le);
      put16(t, 0, le);
    } else if (e.type == 1 || e.type == 6) {
      t.insert(t.end(), {static_cast<unsigned char>(e.value), 0, 0, 0});
    } else {
      put32(t, e.value, le);
    }
  }
  put32(t, 0, le);
  return t;
}

Bytes cat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
Bytes str(const std::string& s) { return Bytes(s.begin(), s.end()); }
const Bytes kExif = {'E', 'x', 'i', 'f', 0, 0};

// An 8 x 6 JPEG written by Pillow (quality 95) of a gradient, 674 bytes (stb_image_write's JPEG encoder is not
// used: it shifts negative values, which UBSan reports).
const unsigned char kJpeg8x6[] =
    "\xff\xd8\xff\xe0\x00\x10\x4a\x46\x49\x46\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xdb\x00\x43\x00\x02\x01\x01\x01\x01\x01\x02"
    "\x01\x01\x01\x02\x02\x02\x02\x02\x04\x03\x02\x02\x02\x02\x05\x04\x04\x03\x04\x06\x05\x06\x06\x06\x05\x06\x06\x06\x07\x09\x08\x06"
    "\x07\x09\x07\x06\x06\x08\x0b\x08\x09\x0a\x0a\x0a\x0a\x0a\x06\x08\x0b\x0c\x0b\x0a\x0c\x09\x0a\x0a\x0a\xff\xdb\x00\x43\x01\x02\x02"
    "\x02\x02\x02\x02\x05\x03\x03\x05\x0a\x07\x06\x07\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a"
    "\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\x0a\xff\xc0"
    "\x00\x11\x08\x00\x06\x00\x08\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01\xff\xc4\x00\x1f\x00\x00\x01\x05\x01\x01\x01\x01\x01\x01\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\xff\xc4\x00\xb5\x10\x00\x02\x01\x03\x03\x02\x04\x03\x05"
    "\x05\x04\x04\x00\x00\x01\x7d\x01\x02\x03\x00\x04\x11\x05\x12\x21\x31\x41\x06\x13\x51\x61\x07\x22\x71\x14\x32\x81\x91\xa1\x08\x23"
    "\x42\xb1\xc1\x15\x52\xd1\xf0\x24\x33\x62\x72\x82\x09\x0a\x16\x17\x18\x19\x1a\x25\x26\x27\x28\x29\x2a\x34\x35\x36\x37\x38\x39\x3a"
    "\x43\x44\x45\x46\x47\x48\x49\x4a\x53\x54\x55\x56\x57\x58\x59\x5a\x63\x64\x65\x66\x67\x68\x69\x6a\x73\x74\x75\x76\x77\x78\x79\x7a"
    "\x83\x84\x85\x86\x87\x88\x89\x8a\x92\x93\x94\x95\x96\x97\x98\x99\x9a\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7"
    "\xb8\xb9\xba\xc2\xc3\xc4\xc5\xc6\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xe1\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xf1"
    "\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9\xfa\xff\xc4\x00\x1f\x01\x00\x03\x01\x01\x01\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00\x00\x01"
    "\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\xff\xc4\x00\xb5\x11\x00\x02\x01\x02\x04\x04\x03\x04\x07\x05\x04\x04\x00\x01\x02\x77\x00"
    "\x01\x02\x03\x11\x04\x05\x21\x31\x06\x12\x41\x51\x07\x61\x71\x13\x22\x32\x81\x08\x14\x42\x91\xa1\xb1\xc1\x09\x23\x33\x52\xf0\x15"
    "\x62\x72\xd1\x0a\x16\x24\x34\xe1\x25\xf1\x17\x18\x19\x1a\x26\x27\x28\x29\x2a\x35\x36\x37\x38\x39\x3a\x43\x44\x45\x46\x47\x48\x49"
    "\x4a\x53\x54\x55\x56\x57\x58\x59\x5a\x63\x64\x65\x66\x67\x68\x69\x6a\x73\x74\x75\x76\x77\x78\x79\x7a\x82\x83\x84\x85\x86\x87\x88"
    "\x89\x8a\x92\x93\x94\x95\x96\x97\x98\x99\x9a\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xc2\xc3\xc4"
    "\xc5\xc6\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9"
    "\xfa\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00\xe3\xff\x00\x63\xcf\xf8\x24\xbf\xc3\x0f\xf4\x5f\xde\x59\x7f\x0f\xfc"
    "\xb2\x3f\xe1\x45\x14\x57\xcd\xe5\x79\xbe\x65\xf5\x45\xfb\xd6\x7a\xbe\x07\x78\x8f\xc7\x1f\xea\x0d\x0f\xf6\xfa\x9f\x7a\xec\xbc\x8f"
    "\xff\xd9";

// That JPEG with `app1` payloads inserted as APP1 segments right after SOI.
Bytes jpeg(const std::vector<Bytes>& app1 = {}) {
  Bytes out(kJpeg8x6, kJpeg8x6 + sizeof kJpeg8x6 - 1);  // the literal's trailing NUL not included
  Bytes segs;
  for (const Bytes& p : app1) {
    segs.insert(segs.end(), {0xFF, 0xE1});
    put16(segs, static_cast<unsigned>(p.size() + 2), false);
    segs.insert(segs.end(), p.begin(), p.end());
  }
  out.insert(out.begin() + 2, segs.begin(), segs.end());
  return out;
}

uint32_t crc32(const unsigned char* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

Bytes chunk(const char* type, const Bytes& data) {
  Bytes c;
  put32(c, static_cast<uint32_t>(data.size()), false);
  Bytes td(type, type + 4);
  td.insert(td.end(), data.begin(), data.end());
  c.insert(c.end(), td.begin(), td.end());
  put32(c, crc32(td.data(), td.size()), false);
  return c;
}

// A PNG of `rows` (each filter byte 0 + samples, big-endian for 16-bit), zlib stored blocks (no compression).
Bytes png(int w, int h, int depth, int ctype, const Bytes& raw, const std::vector<Bytes>& before_idat = {},
          const std::vector<Bytes>& after_idat = {}) {
  Bytes z = {0x78, 0x01};
  for (size_t at = 0; at < raw.size() || at == 0;) {
    const size_t n = std::min<size_t>(65535, raw.size() - at);
    z.push_back(at + n == raw.size() ? 1 : 0);
    put16(z, static_cast<unsigned>(n), true);
    put16(z, static_cast<unsigned>(~n & 0xFFFF), true);
    z.insert(z.end(), raw.begin() + at, raw.begin() + at + n);
    at += n;
    if (n == 0) break;
  }
  uint32_t a = 1, b = 0;
  for (unsigned char v : raw) {
    a = (a + v) % 65521;
    b = (b + a) % 65521;
  }
  put32(z, (b << 16) | a, false);
  Bytes ihdr;
  put32(ihdr, w, false);
  put32(ihdr, h, false);
  ihdr.insert(ihdr.end(), {static_cast<unsigned char>(depth), static_cast<unsigned char>(ctype), 0, 0, 0});
  Bytes out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  out = cat(out, chunk("IHDR", ihdr));
  for (const Bytes& c : before_idat) out = cat(out, c);
  out = cat(out, chunk("IDAT", z));
  for (const Bytes& c : after_idat) out = cat(out, c);
  return cat(out, chunk("IEND", {}));
}

int orient(const Bytes& b) { return vitedge::exif_orientation(b.data(), b.size()); }

void test_exif_parser() {
  const Bytes plain = jpeg();
  CHECK(orient(plain) == 1);
  for (bool le : {true, false})
    for (unsigned o = 1; o <= 8; ++o) {
      // A camera-like IFD0: other tags (with values stored out of line, after the IFD) before the orientation.
      const uint32_t base = 8 + 2 + 12 * 4 + 4;
      Bytes t = tiff({{0x010F, 2, 20, base}, {0x0110, 2, 20, base + 20}, {0x0112, 3, 1, o}, {0x011A, 5, 1, base + 40}}, le);
      t = cat(t, str(std::string("vitedge test camera\0issue 17 rotated\0\0\0", 40)));
      t.insert(t.end(), {0, 0, 0, 72, 0, 0, 0, 1});
      CHECK(orient(jpeg({cat(kExif, t)})) == static_cast<int>(o));
      CHECK(orient(png(1, 1, 8, 0, {0, 0}, {chunk("eXIf", t)})) == static_cast<int>(o));
      CHECK(orient(png(1, 1, 8, 0, {0, 0}, {}, {chunk("eXIf", t)})) == static_cast<int>(o));  // after IDAT
      CHECK(orient(jpeg({cat(kExif, tiff({{0x0112, 4, 1, o}}, le))})) == static_cast<int>(o));  // LONG
    }
  const auto j = [](const Bytes& t) { return orient(jpeg({cat(kExif, t)})); };
  // Malformed blocks: orientation 1, no read outside the buffer (ASan), no exception.
  CHECK(j(tiff({{0x0112, 3, 1, 0}}, true)) == 1);
  CHECK(j(tiff({{0x0112, 3, 1, 9}}, true)) == 1);
  CHECK(j(tiff({{0x0112, 2, 1, 6}}, true)) == 1);                  // ASCII
  CHECK(j(tiff({{0x0112, 3, 2, 6}}, true)) == 6);                  // count 2: the first value (as Pillow)
  CHECK(j(tiff({{0x0112, 8, 1, 6}}, false)) == 6);                 // SSHORT
  CHECK(j(tiff({{0x0112, 9, 1, 0xFFFFFFFAu}}, true)) == 1);        // SLONG -6
  CHECK(j(tiff({{0x0112, 1, 1, 6}}, true)) == 1);                  // BYTE (Pillow reads bytes: not applied)
  CHECK(j(tiff({{0x0112, 11, 1, 0x40C00000u}}, true)) == 1);       // FLOAT 6.0: not an integer type
  CHECK(j(tiff({{0x0112, 99, 1, 6}, {0x0112, 3, 1, 3}}, true)) == 3);  // unknown type skipped, the next one counts
  CHECK(j(tiff({{0x0112, 3, 0, 6}, {0x0112, 3, 1, 3}}, true)) == 3);   // count 0 skipped
  CHECK(j(tiff({{0x0112, 2, 1, 6}, {0x0112, 3, 1, 3}}, true)) == 1);   // ASCII kept: the later one is a repeat
  // An earlier tag's out-of-line value past the end ends the IFD (Pillow: "Truncated File Read"); one whose
  // size alone exceeds the block is skipped.
  CHECK(j(tiff({{0x010F, 2, 20, 100}, {0x0112, 3, 1, 6}}, true)) == 1);
  CHECK(j(tiff({{0x010F, 2, 200, 8}, {0x0112, 3, 1, 6}}, true)) == 6);
  CHECK(j(tiff({{0x010F, 2, 5, 8}, {0x0112, 3, 1, 6}}, true)) == 6);
  CHECK(j(tiff({{0x0112, 3, 3, 1000}}, true)) == 1);               // its own values past the end
  CHECK(j(tiff({{0x0112, 4, 2, 26}, {0x0112, 3, 1, 3}}, true)) == 1);  // LONG x 2 at offset 26: first value 1
  CHECK(j(tiff({{0x0112, 3, 1, 6}}, true, 0xFFFFFFF0u)) == 1);     // IFD0 offset past the end
  CHECK(j(tiff({{0x0112, 3, 1, 6}}, false, 0x7FFFFFFFu)) == 1);
  CHECK(j(tiff({{0x0112, 3, 1, 6}}, true, 8, 65535)) == 6);        // count past the end: complete entries count
  CHECK(j(tiff({{0x0100, 3, 1, 5}, {0x0112, 3, 1, 6}}, true, 8, 65535)) == 6);
  Bytes cut = tiff({{0x0100, 3, 1, 5}, {0x0112, 3, 1, 6}}, true);
  cut.resize(8 + 2 + 12 + 6);                                      // the orientation entry truncated
  CHECK(j(cut) == 1);
  CHECK(j(tiff({{0x0112, 3, 1, 6}, {0x0112, 3, 1, 3}}, true)) == 6);  // the first entry decides
  CHECK(j(cat(kExif, tiff({{0x0112, 3, 1, 6}}, true))) == 6);      // "Exif\0\0" twice (Pillow strips both)
  CHECK(j(str("hello, not TIFF")) == 1);
  CHECK(j(Bytes{'I', 'I', '*', 0, 8, 0}) == 1);                    // header cut short
  Bytes loop = tiff({{0x0112, 3, 1, 6}}, true);                    // next-IFD offset pointing at IFD0 itself
  loop[loop.size() - 4] = 8;
  CHECK(j(loop) == 6);
  // Two APP1 Exif segments: Pillow concatenates their TIFF data; an IFD0 split across them is found.
  const Bytes whole = tiff({{0x0100, 3, 1, 5}, {0x0112, 3, 1, 8}}, false);
  const Bytes first(whole.begin(), whole.begin() + 20), second(whole.begin() + 20, whole.end());
  CHECK(orient(jpeg({cat(kExif, first), cat(kExif, second)})) == 8);
  // PNG: the last eXIf chunk wins.
  CHECK(orient(png(1, 1, 8, 0, {0, 0}, {chunk("eXIf", tiff({{0x0112, 3, 1, 6}}, true))},
                   {chunk("eXIf", tiff({{0x0112, 3, 1, 3}}, true))})) == 3);
  // JPEG segment lengths past the end or below 2, APP1 after SOS, PNG chunk lengths past the end.
  Bytes bad_len = jpeg({cat(kExif, tiff({{0x0112, 3, 1, 6}}, true))});
  bad_len[4] = 0xFF;
  bad_len[5] = 0xFF;
  CHECK(orient(bad_len) == 1);
  bad_len[4] = 0;
  bad_len[5] = 1;
  CHECK(orient(bad_len) == 1);
  Bytes png_bad = png(1, 1, 8, 0, {0, 0}, {chunk("eXIf", tiff({{0x0112, 3, 1, 6}}, true))});
  png_bad[33] = 0x7F;  // the eXIf chunk's length (after the 8-byte signature and 25-byte IHDR chunk)
  CHECK(orient(png_bad) == 1);
  // Every prefix of a valid file: no crash, no out-of-bounds read (checked by ASan in cpp-sanitize).
  const Bytes full_j = jpeg({cat(kExif, cat(tiff({{0x010F, 2, 8, 38}, {0x0112, 3, 1, 7}}, false), str(std::string("camera\0\0", 8))))});
  const Bytes full_p = png(1, 1, 8, 0, {0, 0}, {chunk("eXIf", tiff({{0x0112, 3, 1, 5}}, true))});
  for (const Bytes* full : {&full_j, &full_p})
    for (size_t n = 0; n <= full->size(); ++n) {
      const Bytes part(full->begin(), full->begin() + n);  // its own allocation: ASan sees reads past n
      const int o = vitedge::exif_orientation(part.data(), part.size());
      CHECK(o >= 1 && o <= 8);
    }
  CHECK(vitedge::exif_orientation(nullptr, 10) == 1);
}

void test_apply_orientation() {
  // 3 wide x 2 high, pixel (y, x) = (10 * y + x) in every channel.
  const auto img = [] {
    std::vector<unsigned char> v;
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 3; ++x) v.insert(v.end(), 3, static_cast<unsigned char>(10 * y + x));
    return v;
  };
  // Expected rows of the result for orientations 1..8 (Pillow's FLIP_LEFT_RIGHT, ROTATE_180, FLIP_TOP_BOTTOM,
  // TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90).
  const std::vector<std::vector<std::vector<int>>> want = {
      {{0, 1, 2}, {10, 11, 12}},   {{2, 1, 0}, {12, 11, 10}},  {{12, 11, 10}, {2, 1, 0}},  {{10, 11, 12}, {0, 1, 2}},
      {{0, 10}, {1, 11}, {2, 12}}, {{10, 0}, {11, 1}, {12, 2}}, {{12, 2}, {11, 1}, {10, 0}}, {{2, 12}, {1, 11}, {0, 10}}};
  for (int o = 1; o <= 8; ++o) {
    std::vector<unsigned char> v = img();
    int w = 3, h = 2;
    vitedge::apply_orientation(v, w, h, o);
    const auto& rows = want[o - 1];
    CHECK(h == static_cast<int>(rows.size()) && w == static_cast<int>(rows[0].size()));
    bool same = true;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < 3; ++c) same &= v[(static_cast<size_t>(y) * w + x) * 3 + c] == rows[y][x];
    if (!same) std::cerr << "orientation " << o << ": wrong pixels\n";
    CHECK(same);
  }
}

vitedge::Preprocessing identity(int h, int w) {
  vitedge::Preprocessing p;
  p.height = h;
  p.width = w;
  return p;  // scale 1/255, mean 0, std 1
}

// The uint8 pixel (c, y, x) back from a preprocessed tensor with identity() preprocessing.
int px(const vitedge::Tensor& t, int c, int y, int x) {
  const int H = static_cast<int>(t.shape[2]), W = static_cast<int>(t.shape[3]);
  return static_cast<int>(std::lround(t.data[(static_cast<size_t>(c) * H + y) * W + x] * 255.0f));
}

void test_decode_with_orientation() {
  // A 3 x 2 RGB PNG, pixel (y, x) = (10y + x, 100 + 10y + x, 200 + 10y + x); orientation 6 turns it 2 x 3.
  Bytes raw;
  for (int y = 0; y < 2; ++y) {
    raw.push_back(0);
    for (int x = 0; x < 3; ++x)
      for (int c = 0; c < 3; ++c) raw.push_back(static_cast<unsigned char>(100 * c + 10 * y + x));
  }
  const Bytes rotated = png(3, 2, 8, 2, raw, {chunk("eXIf", tiff({{0x0112, 3, 1, 6}}, false))});
  const vitedge::Tensor t = vitedge::load_image_from_memory(rotated.data(), rotated.size(), identity(3, 2));
  CHECK((t.shape == std::vector<int64_t>{1, 3, 3, 2}));
  // ROTATE_270: output (y, x) = input (H - 1 - x, y) with H = 2.
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 2; ++x)
      for (int c = 0; c < 3; ++c) CHECK(px(t, c, y, x) == 100 * c + 10 * (1 - x) + y);
}

void test_decode_jpeg_with_orientation() {
  // The same JPEG data with orientation 1 and 8: the decoded pixels of 8 are ROTATE_90 of 1's (6 x 8 -> 8 x 6).
  const Bytes up = jpeg(), turned = jpeg({cat(kExif, tiff({{0x0112, 3, 1, 8}}, true))});
  const vitedge::Tensor a = vitedge::load_image_from_memory(up.data(), up.size(), identity(6, 8));
  const vitedge::Tensor b = vitedge::load_image_from_memory(turned.data(), turned.size(), identity(8, 6));
  CHECK((b.shape == std::vector<int64_t>{1, 3, 8, 6}));
  bool same = true;
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 6; ++x)
      for (int c = 0; c < 3; ++c) same &= px(b, c, y, x) == px(a, c, x, 8 - 1 - y);  // out(y, x) = in(x, W-1-y)
  CHECK(same);
}

void test_16bit_png() {
  // 16-bit samples become their high byte (v >> 8) whatever the low byte: grey, grey+alpha, RGB, RGBA.
  const int w = 4, h = 3;
  for (int ctype : {0, 4, 2, 6}) {
    const int ch = ctype == 0 ? 1 : ctype == 4 ? 2 : ctype == 2 ? 3 : 4;
    Bytes raw;
    std::vector<unsigned> samples;
    for (int y = 0; y < h; ++y) {
      raw.push_back(0);
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < ch; ++c) {
          const unsigned v = (static_cast<unsigned>(y * 977 + x * 3001 + c * 12345 + 255) * 40503u) & 0xFFFF;
          samples.push_back(v);
          raw.push_back(static_cast<unsigned char>(v >> 8));
          raw.push_back(static_cast<unsigned char>(v & 0xFF));
        }
    }
    const Bytes p = png(w, h, 16, ctype, raw);
    const vitedge::Tensor t = vitedge::load_image_from_memory(p.data(), p.size(), identity(h, w));
    bool same = true;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < 3; ++c) {
          const int src = ch <= 2 ? 0 : c;  // grey replicated to RGB; alpha dropped
          same &= px(t, c, y, x) == static_cast<int>(samples[(static_cast<size_t>(y) * w + x) * ch + src] >> 8);
        }
    if (!same) std::cerr << "16-bit PNG colour type " << ctype << ": not v >> 8\n";
    CHECK(same);
  }
  // A dark 16-bit grey image (every sample <= 255): all zero after v >> 8, as libpng's strip_16.
  Bytes raw;
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);
    for (int x = 0; x < w; ++x) raw.insert(raw.end(), {0, static_cast<unsigned char>(40 * y + x)});
  }
  const Bytes dark = png(w, h, 16, 0, raw);
  const vitedge::Tensor t = vitedge::load_image_from_memory(dark.data(), dark.size(), identity(h, w));
  bool zero = true;
  for (float v : t.data) zero &= v == 0.0f;
  CHECK(zero);
}

void test_files(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  const vitedge::Preprocessing p = identity(4, 4);
  const auto timed = [&](const std::string& path, const std::string& needle) {
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS(vitedge::load_image(path, p), needle);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 5.0) std::cerr << path << ": refusal took " << s << " s\n";
    CHECK(s <= 5.0);
  };
  const fs::path fifo = dir / "fifo.jpg";
  CHECK(::mkfifo(fifo.c_str(), 0600) == 0);
  timed(fifo.string(), "a FIFO, not a regular file");  // with no writer: must not block
  timed("/dev/zero", "a character device, not a regular file");
  timed(dir.string(), "a directory, not a regular file");
  // A sparse 3 GiB file: refused from its size (fstat), nothing read.
  const fs::path big = dir / "big.png";
  { std::ofstream(big.string()).put('x'); }
  fs::resize_file(big, 3ull << 30);
  timed(big.string(), "over the limit of 2147483647 bytes");
  const fs::path empty = dir / "empty.png";
  { std::ofstream(empty.string()); }
  timed(empty.string(), "no bytes");
  timed((dir / "missing.png").string(), "cannot open file");
  // A regular file (and a symlink to one) reads as before.
  Bytes raw = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  raw.resize(1 + 4 * 3);
  Bytes rows;
  for (int y = 0; y < 4; ++y) rows = cat(rows, raw);
  const Bytes ok = png(4, 4, 8, 2, rows);
  const fs::path good = dir / "good.png";
  std::ofstream(good.string(), std::ios::binary).write(reinterpret_cast<const char*>(ok.data()), static_cast<std::streamsize>(ok.size()));
  fs::create_symlink(good, dir / "link.png");
  CHECK(vitedge::read_image_file(good.string()) == ok);
  CHECK(vitedge::load_image((dir / "link.png").string(), p).shape == (std::vector<int64_t>{1, 3, 4, 4}));
}

int dump(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: vitedge_image_tests --dump IMG H W OUT.f32\n";
    return 2;
  }
  try {
    const vitedge::Tensor t = vitedge::load_image(argv[2], identity(std::atoi(argv[3]), std::atoi(argv[4])));
    std::ofstream out(argv[5], std::ios::binary);
    out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size() * sizeof(float)));
    return out ? 0 : 1;
  } catch (const vitedge::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

int orientations(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    std::ifstream in(argv[i], std::ios::binary);
    const Bytes b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::cout << vitedge::exif_orientation(b.data(), b.size()) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--dump") return dump(argc, argv);
  if (argc > 1 && std::string(argv[1]) == "--orientation") return orientations(argc, argv);
  namespace fs = std::filesystem;
  char tmpl[] = "/tmp/vitedge_image_tests_XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  if (d == nullptr) {
    std::cerr << "mkdtemp failed\n";
    return 1;
  }
  test_exif_parser();
  test_apply_orientation();
  test_decode_with_orientation();
  test_decode_jpeg_with_orientation();
  test_16bit_png();
  test_files(d);
  std::error_code ec;
  fs::remove_all(d, ec);
  if (failures == 0) std::cout << "image tests: all passed\n";
  return failures;
}
