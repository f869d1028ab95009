// SHA-256 with OpenSSL's libcrypto (EVP_Digest*; FIPS 180-4), and the artifact integrity check.
#include "sha256.h"

#include <unistd.h>

#include "artifact_io.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <system_error>
#include <vector>

namespace vitedge {
namespace fs = std::filesystem;

namespace {

using Ctx = std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)>;

Ctx new_ctx() {
  Ctx ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error("libcrypto: SHA-256 init failed");
  return ctx;
}

std::string finish(EVP_MD_CTX* ctx) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx, md, &n) != 1 || n != 32) throw Error("libcrypto: SHA-256 final failed");
  static const char* kHex = "0123456789abcdef";
  std::string out(64, '0');
  for (unsigned i = 0; i < 32; ++i) {
    out[2 * i] = kHex[md[i] >> 4];
    out[2 * i + 1] = kHex[md[i] & 15];
  }
  return out;
}

}  // namespace

std::string sha256_hex(const void* data, size_t size) {
  Ctx ctx = new_ctx();
  if (EVP_DigestUpdate(ctx.get(), data, size) != 1) throw Error("libcrypto: SHA-256 update failed");
  return finish(ctx.get());
}

std::string sha256_regular_file(const std::string& path) {
  const int fd = open_regular_file(path, "artifact file");
  try {
    std::string h = sha256_fd_hex(fd, path);
    ::close(fd);
    return h;
  } catch (...) {
    ::close(fd);
    throw;
  }
}

std::string sha256_file_hex(const std::string& path) { return sha256_regular_file(path); }

std::string sha256_fd_hex(int fd, const std::string& path) {
  Ctx ctx = new_ctx();
  std::vector<char> block(1 << 20);
  for (;;) {
    const ssize_t got = ::read(fd, block.data(), block.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw Error("cannot read " + path + ": " + std::strerror(errno));
    if (got == 0) break;
    if (EVP_DigestUpdate(ctx.get(), block.data(), static_cast<size_t>(got)) != 1)
      throw Error("libcrypto: SHA-256 update failed");
  }
  return finish(ctx.get());
}

void verify_artifact_files(const std::string& artifact_dir, const Manifest& m, bool include_artifact) {
  if (!m.file_sha256.count(m.artifact))
    throw Error("manifest in " + artifact_dir + " records no sha256 for the artifact file '" + m.artifact +
                "' (integrity cannot be checked; re-export it, or skip the check with verify = false / --no-verify)");
  for (const auto& [name, expected_bytes] : m.file_bytes) {
    const auto it = m.file_sha256.find(name);
    if (it == m.file_sha256.end())
      throw Error("manifest in " + artifact_dir + " lists '" + name + "' without a sha256 (\"sha256\": null); every "
                  "file of a verified artifact must carry one (re-export it, or skip the check with verify = false / "
                  "--no-verify)");
    if (!include_artifact && name == m.artifact) continue;
    const fs::path p = fs::path(artifact_dir) / name;
    artifact_file_path(artifact_dir, name);  // missing, symlink out of the folder, not a regular file: Error
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    if (ec) throw Error("cannot stat " + p.string() + ": " + ec.message());
    if (expected_bytes >= 0 && static_cast<int64_t>(size) != expected_bytes)
      throw Error("artifact file " + p.string() + " has " + std::to_string(size) +
                  " bytes but the manifest records " + std::to_string(expected_bytes) + " (truncated or replaced?)");
    const std::string got = sha256_regular_file(p.string());
    if (got != it->second)
      throw Error("artifact file " + p.string() + " does not match its manifest: sha256 " + got +
                  ", manifest records " + it->second + " (corrupted or tampered with?)");
  }
}

}  // namespace vitedge
