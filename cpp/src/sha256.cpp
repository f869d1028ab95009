// SHA-256 with OpenSSL's libcrypto (EVP_Digest*; FIPS 180-4), and the artifact integrity check.
#include "sha256.h"

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

std::string sha256_file_hex(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path + ": " + std::strerror(errno));
  Ctx ctx = new_ctx();
  std::vector<char> block(1 << 20);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    const std::streamsize got = in.gcount();
    if (got > 0 && EVP_DigestUpdate(ctx.get(), block.data(), static_cast<size_t>(got)) != 1)
      throw Error("libcrypto: SHA-256 update failed");
  }
  if (in.bad()) throw Error("cannot read " + path + ": I/O error");
  return finish(ctx.get());
}

void verify_artifact_files(const std::string& artifact_dir, const Manifest& m) {
  if (!m.file_sha256.count(m.artifact))
    throw Error("manifest in " + artifact_dir + " records no sha256 for the artifact file '" + m.artifact +
                "' (integrity cannot be checked; re-export it, or skip the check with verify = false / --no-verify)");
  for (const auto& [name, expected_bytes] : m.file_bytes) {
    const fs::path p = fs::path(artifact_dir) / name;
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) throw Error("artifact file " + p.string() + " is missing");
    const auto size = fs::file_size(p, ec);
    if (ec) throw Error("cannot stat " + p.string() + ": " + ec.message());
    if (expected_bytes >= 0 && static_cast<int64_t>(size) != expected_bytes)
      throw Error("artifact file " + p.string() + " has " + std::to_string(size) +
                  " bytes but the manifest records " + std::to_string(expected_bytes) + " (truncated or replaced?)");
    const auto it = m.file_sha256.find(name);
    if (it == m.file_sha256.end()) continue;  // sizes-only entry (not the main file, checked above)
    const std::string got = sha256_file_hex(p.string());
    if (got != it->second)
      throw Error("artifact file " + p.string() + " does not match its manifest: sha256 " + got +
                  ", manifest records " + it->second + " (corrupted or tampered with?)");
  }
}

}  // namespace vitedge
