// Internal: SHA-256 (FIPS 180-4) via OpenSSL's libcrypto EVP interface, and artifact integrity checks.
// Not installed, not part of the public API (runner.h exposes the result through Runner::open's checks).
#pragma once

#include <cstddef>
#include <string>

#include "vitedge/runner.h"

namespace vitedge {

/// Lower-case hex SHA-256 of `size` bytes at `data` (64 characters). Throws Error if libcrypto fails.
std::string sha256_hex(const void* data, size_t size);

/// Lower-case hex SHA-256 of the file at `path`, read in 1 MiB blocks. Throws Error("cannot read PATH: ...").
std::string sha256_file_hex(const std::string& path);

/// Check every file `manifest.files` covers, in name order: it exists inside `artifact_dir`, has the recorded
/// size (when recorded) and the recorded SHA-256. The main artifact file must be covered by an entry with a
/// sha256 (otherwise a manifest without "files" would silently skip the check). Throws Error naming the
/// first file that is missing or does not match, with both digests.
void verify_artifact_files(const std::string& artifact_dir, const Manifest& manifest);

}  // namespace vitedge
