// Reading artifact files once, and structural checks of zip archives and ONNX protobufs made on the bytes.
#include "artifact_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <system_error>


namespace vitedge {
namespace fs = std::filesystem;

namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// open + fstat: a regular file of at most max_bytes. Returns the size.
uint64_t open_regular(const std::string& path, uint64_t max_bytes, const std::string& what, Fd& f) {
  f.fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (f.fd < 0) throw Error("cannot open " + what + " " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) throw Error("cannot stat " + what + " " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    throw Error(what + " " + path + " is not a regular file (FIFO, device, socket or directory); refusing it");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes)
    throw Error(what + " " + path + " has " + std::to_string(size) + " bytes, more than the limit of " +
                std::to_string(max_bytes));
  // Regular files never block; clear O_NONBLOCK anyway so reads behave normally.
  const int flags = ::fcntl(f.fd, F_GETFL);
  if (flags >= 0) ::fcntl(f.fd, F_SETFL, flags & ~O_NONBLOCK);
  return size;
}

}  // namespace

std::string read_regular_file(const std::string& path, uint64_t max_bytes, const std::string& what,
                              int64_t expected_bytes) {
  Fd f;
  const uint64_t size = open_regular(path, max_bytes, what, f);
  if (expected_bytes >= 0 && size != static_cast<uint64_t>(expected_bytes))
    throw Error(what + " " + path + " has " + std::to_string(size) + " bytes but the manifest records " +
                std::to_string(expected_bytes) + " (truncated or replaced?)");
  std::string out;
  out.resize(static_cast<size_t>(size));
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(f.fd, &out[got], std::min<size_t>(out.size() - got, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error("cannot read " + what + " " + path + ": " + std::strerror(errno));
    if (n == 0) throw Error(what + " " + path + " shrank while it was read (" + std::to_string(got) + " of " +
                            std::to_string(size) + " bytes)");
    got += static_cast<size_t>(n);
  }
  char extra;
  if (::read(f.fd, &extra, 1) > 0)
    throw Error(what + " " + path + " grew while it was read (more than " + std::to_string(size) + " bytes)");
  return out;
}

int open_regular_file(const std::string& path, const std::string& what) {
  Fd f;
  open_regular(path, UINT64_MAX, what, f);
  const int fd = f.fd;
  f.fd = -1;
  return fd;
}

namespace {

// A path as Python's pathlib reads it, for the components that matter here: trailing "/" and "/." dropped
// (Path("a/model.pt/") is "a/model.pt"), repeated "/" collapsed; a "." component inside is left to the OS.
std::string pathlib_like(const std::string& path) {
  std::string s = path;
  for (;;) {
    if (s.size() > 1 && s.back() == '/') s.pop_back();
    else if (s.size() > 2 && s.compare(s.size() - 2, 2, "/.") == 0) s.resize(s.size() - 2);
    else break;
  }
  return s;
}

// "./a//b/" -> "a/b": the components of a relative manifest name without empty and "." ones, as Python's
// PurePosixPath compares names.
std::string normal_name(const std::string& name) {
  std::string out;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    const std::string part = name.substr(start, end - start);
    if (!part.empty() && part != ".") out += (out.empty() ? "" : "/") + part;
    start = end + 1;
  }
  return out;
}

const char* const kNotModelFile = " is a file but not the model file of an artifact";

std::string printable(const std::string& name);  // below

}  // namespace

ArtifactLocation locate_artifact(const std::string& path) {
  std::error_code ec;
  if (path.empty()) throw Error("artifact path is empty");
  if (fs::is_directory(path, ec)) return {path, "", ""};
  const std::string p = pathlib_like(path);
  if (!fs::is_regular_file(p, ec)) {
    if (!fs::exists(fs::symlink_status(p, ec)))
      throw Error("artifact '" + path + "' does not exist");
    throw Error("'" + path + "' is neither an artifact folder nor a model file (FIFO, device, socket or dangling "
                "symlink?)");
  }
  const fs::path fp(p);
  const std::string name = fp.filename().string();
  const std::string dir = fp.has_parent_path() ? fp.parent_path().string() : ".";
  if (name == "manifest.json")
    throw Error("'" + path + "'" + kNotModelFile + " (it is the manifest; give its folder '" + dir +
                "' or the model file it names)");
  if (!fs::exists(fs::symlink_status(fs::path(dir) / "manifest.json", ec)))
    throw Error("'" + path + "'" + kNotModelFile + " (no manifest.json beside it)");
  return {dir, path, name};
}

void check_artifact_file(const ArtifactLocation& loc, const Manifest& m, const std::string& manifest_path) {
  if (loc.file.empty() || normal_name(m.artifact) == loc.file_name) return;
  throw Error("'" + loc.file + "'" + kNotModelFile + " (its " + manifest_path + " names '" + printable(m.artifact) +
              "'; give the folder '" + loc.dir + "' or that file)");
}

std::string artifact_file_path(const std::string& dir, const std::string& name) {
  const fs::path p = fs::path(dir) / name;
  std::error_code ec;
  const auto st = fs::symlink_status(p, ec);
  if (ec || !fs::exists(st)) throw Error("artifact file " + p.string() + " is missing");
  // A symlink anywhere on the way must stay inside the artifact directory (as the Python loader requires).
  const fs::path real_dir = fs::canonical(dir, ec);
  if (ec) throw Error("cannot resolve artifact directory " + dir + ": " + ec.message());
  const fs::path real = fs::canonical(p, ec);
  if (ec) throw Error("cannot resolve artifact file " + p.string() + ": " + ec.message());
  const auto rel = real.lexically_relative(real_dir);
  if (rel.empty() || rel.begin()->string() == ".." || rel.is_absolute())
    throw Error("artifact file " + p.string() + " is a symlink to " + real.string() +
                ", outside the artifact directory; refusing it");
  if (!fs::is_regular_file(real, ec))
    throw Error("artifact file " + p.string() + " is not a regular file (FIFO, device, socket or directory); "
                "refusing it");
  return p.string();
}

std::vector<std::string> list_artifact_tree(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
  if (ec) throw Error("cannot list artifact directory " + dir + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw Error("cannot list artifact directory " + dir + ": " + ec.message());
    const auto st = it->symlink_status(ec);
    const std::string rel = it->path().lexically_relative(dir).generic_string();
    if (fs::is_symlink(st))
      throw Error("artifact " + dir + " holds a symlink '" + rel + "'; signed artifacts may not (model.sig was "
                  "made without symlinks)");
    if (fs::is_directory(st)) continue;
    if (!fs::is_regular_file(st))
      throw Error("artifact " + dir + " holds '" + rel + "', which is not a regular file; refusing it");
    if (rel == "model.sig") continue;
    out.push_back(rel);
  }
  if (ec) throw Error("cannot list artifact directory " + dir + ": " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

// ---- zip --------------------------------------------------------------------------------------------------

namespace {

constexpr uint64_t kZipMaxEntries = 100000;
constexpr uint64_t kZipMaxTotal = uint64_t{16} << 30;
constexpr uint64_t kZipMaxRatio = 200;
constexpr uint64_t kZipRatioMinBytes = uint64_t{1} << 20;

uint16_t u16(const std::string& b, uint64_t at) {
  return static_cast<uint16_t>(static_cast<unsigned char>(b[at]) | (static_cast<unsigned char>(b[at + 1]) << 8));
}
uint32_t u32(const std::string& b, uint64_t at) { return u16(b, at) | (static_cast<uint32_t>(u16(b, at + 2)) << 16); }
uint64_t u64(const std::string& b, uint64_t at) { return u32(b, at) | (static_cast<uint64_t>(u32(b, at + 4)) << 32); }

// A member name as it may appear in a one-line message: control bytes (NUL, newline, ...) shown as \xNN.
std::string printable(const std::string& name) {
  std::string out;
  static const char* kHex = "0123456789abcdef";
  for (unsigned char c : name.substr(0, 200)) {
    if (c < 0x20 || c == 0x7f) out += std::string("\\x") + kHex[c >> 4] + kHex[c & 15];
    else out += static_cast<char>(c);
  }
  return name.size() > 200 ? out + "..." : out;
}

struct ZipMember {
  std::string name;
  uint64_t local_offset = 0, compressed = 0, uncompressed = 0;
};

}  // namespace

void check_zip_archive(const std::string& b, const std::string& origin) {
  const std::string where = "archive " + origin;
  auto bad = [&](const std::string& why) -> Error { return Error(where + ": " + why + "; refusing it"); };
  const uint64_t n = b.size();
  if (n < 22) throw bad("not a zip archive (too short)");
  // End of central directory record: the last "PK\5\6" with a comment that ends exactly at the end of the file.
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = n >= 22 + 65535 ? n - 22 - 65535 : 0;
  for (uint64_t i = n - 22 + 1; i-- > lowest;) {
    if (u32(b, i) == 0x06054b50 && i + 22 + u16(b, i + 20) == n) {
      eocd = i;
      break;
    }
  }
  if (eocd == UINT64_MAX) throw bad("not a zip archive (no end of central directory record)");
  uint64_t entries = u16(b, eocd + 10), cd_size = u32(b, eocd + 12), cd_offset = u32(b, eocd + 16);
  if (u16(b, eocd + 4) != 0 || u16(b, eocd + 6) != 0) throw bad("multi-disk archives are not read");
  if (eocd >= 20 && u32(b, eocd - 20) == 0x07064b50) {  // zip64 end of central directory locator
    const uint64_t z = u64(b, eocd - 20 + 8);
    if (z > n - 56 || u32(b, z) != 0x06064b50) throw bad("corrupt zip64 end of central directory");
    entries = u64(b, z + 32);
    cd_size = u64(b, z + 40);
    cd_offset = u64(b, z + 48);
  }
  if (entries > kZipMaxEntries)
    throw bad("it has " + std::to_string(entries) + " members, more than the limit of " + std::to_string(kZipMaxEntries));
  if (cd_offset > n || cd_size > n - cd_offset) throw bad("the central directory lies outside the file");
  std::vector<ZipMember> members;
  std::set<std::string> seen;
  uint64_t total = 0, p = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t k = 0; k < entries; ++k) {
    if (p + 46 > cd_end || u32(b, p) != 0x02014b50) throw bad("corrupt central directory");
    const uint16_t flags = u16(b, p + 8), method = u16(b, p + 10);
    uint64_t csize = u32(b, p + 20), usize = u32(b, p + 24);
    const uint16_t name_len = u16(b, p + 28), extra_len = u16(b, p + 30), comment_len = u16(b, p + 32);
    const uint16_t disk = u16(b, p + 34);
    const uint32_t ext_attr = u32(b, p + 38);
    uint64_t local = u32(b, p + 42);
    if (p + 46 + name_len + extra_len + comment_len > cd_end) throw bad("corrupt central directory");
    const std::string raw_name = b.substr(p + 46, name_len);
    const std::string name = printable(raw_name);  // for messages
    // zip64 extended information: the 0xFFFFFFFF fields, in order.
    for (uint64_t e = p + 46 + name_len, e_end = e + extra_len; e + 4 <= e_end;) {
      const uint16_t id = u16(b, e), len = u16(b, e + 2);
      if (e + 4 + len > e_end) throw bad("corrupt extra field of member '" + name + "'");
      if (id == 0x0001) {
        uint64_t q = e + 4;
        auto take = [&](uint64_t& v) {
          if (v != 0xFFFFFFFFu) return;
          if (q + 8 > e + 4 + len) throw bad("corrupt zip64 field of member '" + name + "'");
          v = u64(b, q);
          q += 8;
        };
        take(usize);
        take(csize);
        take(local);
      }
      e += 4 + len;
    }
    p += 46 + name_len + extra_len + comment_len;
    if (disk != 0 && disk != 0xFFFF) throw bad("member '" + name + "' is on another disk");
    // Name rules (vitedge/safety.py check_relative_name), on the name without a trailing "/" (directories).
    std::string stem = raw_name;
    while (!stem.empty() && stem.back() == '/') stem.pop_back();
    if (stem.empty()) stem = name;
    if (stem.empty() || stem == ".") throw bad("member '" + name + "' is not a file name");
    if (stem.find('\0') != std::string::npos || stem.find('\\') != std::string::npos)
      throw bad("member '" + name + "' holds a NUL or backslash");
    if (stem.front() == '/' || (stem.size() > 1 && stem[1] == ':')) throw bad("member '" + name + "' is an absolute path");
    if (stem.size() > 1024) throw bad("member name '" + stem.substr(0, 40) + "...' is longer than 1024 bytes");
    std::string key;
    for (size_t s = 0; s <= stem.size();) {
      size_t e = stem.find('/', s);
      if (e == std::string::npos) e = stem.size();
      const std::string part = stem.substr(s, e - s);
      if (part == "..") throw bad("member '" + name + "' escapes its folder ('..')");
      if (part.size() > 255) throw bad("member '" + name.substr(0, 40) + "...' has a part longer than 255 bytes");
      if (!part.empty() && part != ".") key += (key.empty() ? "" : "/") + part;
      s = e + 1;
    }
    if (!seen.insert(key).second) throw bad("member '" + name + "' appears twice");
    if (((ext_attr >> 16) & 0170000) == 0120000) throw bad("member '" + name + "' is a symlink");
    if (flags & 0x1) throw bad("member '" + name + "' is encrypted");
    if (method != 0 && method != 8)
      throw bad("member '" + name + "' uses compression method " + std::to_string(method) +
                " (only stored and deflate are read)");
    total += usize;
    if (usize > kZipMaxTotal || total > kZipMaxTotal)
      throw bad("it expands to more than " + std::to_string(kZipMaxTotal) + " bytes (zip bomb?) at member '" + name + "'");
    if (usize >= kZipRatioMinBytes && usize > kZipMaxRatio * std::max<uint64_t>(csize, 1))
      throw bad("member '" + name + "' expands " + std::to_string(usize / std::max<uint64_t>(csize, 1)) +
                "-fold, more than the limit of " + std::to_string(kZipMaxRatio) + " (zip bomb?)");
    members.push_back({raw_name, local, csize, usize});
  }
  // Layout: each local header where the directory says and naming the same member; data spans disjoint and
  // before the central directory.
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> spans;
  for (const ZipMember& m : members) {
    if (m.local_offset >= n) throw bad("member '" + printable(m.name) + "' starts outside the file");
    if (m.local_offset + 30 > n) throw bad("member '" + printable(m.name) + "' has a truncated local header");
    if (u32(b, m.local_offset) != 0x04034b50)
      throw bad("member '" + printable(m.name) + "' has no local header where the directory says");
    const uint16_t name_len = u16(b, m.local_offset + 26), extra_len = u16(b, m.local_offset + 28);
    if (m.local_offset + 30 + name_len > n || b.compare(m.local_offset + 30, name_len, m.name) != 0)
      throw bad("member '" + printable(m.name) + "' is named differently in its local header");
    const uint64_t end = m.local_offset + 30 + name_len + extra_len + m.compressed;
    if (end < m.local_offset || end > n) throw bad("member '" + printable(m.name) + "' runs past the end of the file");
    spans.push_back({{m.local_offset, end}, printable(m.name)});
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first.first < spans[i - 1].first.second)
      throw bad("members '" + spans[i - 1].second + "' and '" + spans[i].second + "' overlap (zip bomb?)");
  if (!spans.empty() && spans.back().first.second > cd_offset)
    throw bad("member '" + spans.back().second + "' runs into the central directory");
}

// ---- ONNX external data -----------------------------------------------------------------------------------

namespace {

// The protobuf message types on the way from ModelProto to every TensorProto (onnx.proto3 field numbers).
enum class Msg { Model, Graph, Node, Attribute, Tensor, SparseTensor, Function };

// field number -> sub-message type, for the length-delimited fields that lead to tensors.
const std::map<int, Msg>& children(Msg m) {
  static const std::map<int, Msg> model{{7, Msg::Graph}, {25, Msg::Function}};
  static const std::map<int, Msg> graph{{1, Msg::Node}, {5, Msg::Tensor}, {15, Msg::SparseTensor}};
  static const std::map<int, Msg> node{{5, Msg::Attribute}};
  static const std::map<int, Msg> attribute{{5, Msg::Tensor}, {6, Msg::Graph}, {10, Msg::Tensor},
                                            {11, Msg::Graph}, {22, Msg::SparseTensor}, {23, Msg::SparseTensor}};
  static const std::map<int, Msg> sparse{{1, Msg::Tensor}, {2, Msg::Tensor}};
  static const std::map<int, Msg> function{{7, Msg::Node}};
  static const std::map<int, Msg> none;
  switch (m) {
    case Msg::Model: return model;
    case Msg::Graph: return graph;
    case Msg::Node: return node;
    case Msg::Attribute: return attribute;
    case Msg::SparseTensor: return sparse;
    case Msg::Function: return function;
    default: return none;
  }
}

struct PbReader {
  const std::string& b;
  const std::string& origin;
  [[noreturn]] void corrupt() const { throw Error("ONNX model " + origin + " is not a valid protobuf; refusing it"); }
  uint64_t varint(uint64_t& p, uint64_t end) const {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) corrupt();
      const auto c = static_cast<unsigned char>(b[p++]);
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
    corrupt();
  }
  void walk(Msg type, uint64_t p, uint64_t end, int depth) const {
    if (depth > 100) throw Error("ONNX model " + origin + " nests subgraphs deeper than 100; refusing it");
    const auto& kids = children(type);
    while (p < end) {
      const uint64_t tag = varint(p, end);
      const int field = static_cast<int>(tag >> 3), wire = static_cast<int>(tag & 7);
      if (field == 0) corrupt();
      switch (wire) {
        case 0: {
          const uint64_t v = varint(p, end);
          if (type == Msg::Tensor && field == 14 && v != 0)
            throw Error("ONNX model " + origin + " stores a tensor as external data (data_location EXTERNAL); "
                        "the C++ runner loads only the verified .onnx file: re-export it without external data");
          break;
        }
        case 1: if (end - p < 8) corrupt(); p += 8; break;
        case 5: if (end - p < 4) corrupt(); p += 4; break;
        case 2: {
          const uint64_t len = varint(p, end);
          if (len > end - p) corrupt();
          if (type == Msg::Tensor && field == 13)
            throw Error("ONNX model " + origin + " stores a tensor as external data (external_data); the C++ "
                        "runner loads only the verified .onnx file: re-export it without external data");
          const auto it = kids.find(field);
          if (it != kids.end()) walk(it->second, p, p + len, depth + 1);
          p += len;
          break;
        }
        default: corrupt();  // groups (3, 4) are not used by ONNX
      }
    }
  }
};

}  // namespace

void check_onnx_no_external_data(const std::string& bytes, const std::string& origin) {
  PbReader{bytes, origin}.walk(Msg::Model, 0, bytes.size(), 0);
}

}  // namespace vitedge

namespace vitedge {

void check_openvino_ir(const std::string& bytes, const std::string& origin) {
  const std::string not_ir = "OpenVINO IR " + origin + " is not an OpenVINO IR graph: ";
  if (bytes.find('\0') != std::string::npos)
    throw Error(not_ir + "it holds a NUL byte (an IR graph is XML text; other model formats are refused)");
  std::string lower(bytes);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.find("<!doctype") != std::string::npos || lower.find("<!entity") != std::string::npos)
    throw Error(not_ir + "it holds a DOCTYPE or ENTITY declaration (refused: no entity expansion)");
  size_t i = bytes.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  auto at = [&](const char* s) { return bytes.compare(i, std::strlen(s), s) == 0; };
  bool first = true;
  while (i < bytes.size()) {
    if (std::strchr(" \t\r\n", bytes[i]) != nullptr) {
      ++i;
      continue;
    }
    if (first && at("<?xml") && i + 5 < bytes.size() && std::strchr(" \t\r\n?", bytes[i + 5]) != nullptr) {
      const size_t end = bytes.find("?>", i);
      if (end == std::string::npos) throw Error(not_ir + "its XML declaration is not closed");
      i = end + 2;
    } else if (at("<!--")) {
      const size_t end = bytes.find("-->", i + 4);
      if (end == std::string::npos) throw Error(not_ir + "a comment before its root element is not closed");
      i = end + 3;
    } else {
      break;
    }
    first = false;
  }
  if (!(at("<net") && i + 4 < bytes.size() && std::strchr(" \t\r\n>/", bytes[i + 4]) != nullptr))
    throw Error(not_ir + "its root element is not <net> (an OpenVINO artifact's graph must be IR XML; other "
                "formats, e.g. ONNX, are refused)");
}

}  // namespace vitedge
