// Internal (not installed): pieces of image.cpp that the tests reach directly.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace vitedge {

/// The EXIF Orientation (1..8) of an encoded JPEG or PNG image, by the rule vitedge/data.py's
/// exif_orientation applies too (CONVENTIONS.md, preprocessing step 3): JPEG, the APP1 "Exif\0\0" segments
/// before the first scan (their TIFF data concatenated, as Pillow does); PNG, the last eXIf chunk. IFD0's entries
/// are walked as Pillow's ImageFileDirectory_v2 walks them (an incomplete entry or an out-of-line value past the
/// end ends the walk; unknown types, count 0, oversized values and repeated tags are skipped); the first 0x0112
/// entry kept gives the orientation if its type is an integer one and its first value is 1..8. Anything else, a
/// malformed or truncated block included, is orientation 1. Every offset is bounds-checked; only IFD0 is read,
/// so IFD chains cannot loop.
int exif_orientation(const unsigned char* bytes, size_t size);

/// Apply `orientation` (1..8, as exif_orientation returns) to 8-bit RGB pixels (`h` x `w` x 3, row-major) in
/// place; `w` and `h` are swapped for 5..8. Same pixels as Pillow's ImageOps.exif_transpose.
void apply_orientation(std::vector<unsigned char>& rgb, int& w, int& h, int orientation);

/// Largest image file load_image reads: 2^31 - 1 bytes (stb_image takes an int size). Checked with fstat
/// before any byte is read; data.py's MAX_IMAGE_BYTES is the same number.
constexpr long long kMaxImageFileBytes = 2147483647LL;

/// The bytes of the regular file at `path`: opened with O_NONBLOCK (a FIFO cannot block the open), fstat'ed
/// on the descriptor (anything but a regular file is refused: FIFO, device, directory, socket), its size
/// checked against kMaxImageFileBytes before reading, then read. Throws Error("cannot decode image PATH: ...").
std::vector<unsigned char> read_image_file(const std::string& path);

}  // namespace vitedge
