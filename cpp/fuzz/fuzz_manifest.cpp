// libFuzzer target: vitedge::parse_manifest on arbitrary bytes. The only acceptable failure is a
// vitedge::Error (any other exception escapes and libFuzzer reports it as a crash); ASan/UBSan catch memory
// errors and undefined behaviour. A manifest that parses must satisfy the invariants Runner::open relies on.
#include <cstddef>
#include <cstdint>
#include <string>

#include "vitedge/runner.h"

namespace {

bool inside(const std::string& name) {  // no empty, absolute or ".." names may get through
  if (name.empty() || name[0] == '/' || name[0] == '\\') return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find_first_of("/\\", start);
    if (end == std::string::npos) end = name.size();
    if (name.compare(start, end - start, "..") == 0) return false;
    start = end + 1;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vitedge::Manifest m;
  try {
    m = vitedge::parse_manifest(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const vitedge::Error&) {
    return 0;
  }
  if (m.schema_version != 1 || m.inputs.empty() || m.outputs.empty() || !inside(m.artifact)) __builtin_trap();
  for (const auto& spec : m.inputs)
    for (int64_t d : spec.shape)
      if (d == 0 || d < -1) __builtin_trap();
  for (const auto& kv : m.file_bytes)
    if (!inside(kv.first) || kv.second < -1) __builtin_trap();
  for (const auto& kv : m.file_sha256)
    if (kv.second.size() != 64 || !m.file_bytes.count(kv.first)) __builtin_trap();
  if (m.preprocessing) {
    const auto& p = *m.preprocessing;
    if (p.height <= 0 || p.width <= 0 || p.height > 65536 || p.width > 65536) __builtin_trap();
    for (float s : p.std)
      if (s == 0.f) __builtin_trap();
  }
  return 0;
}
