// Internal: SHA-256 (FIPS 180-4) via OpenSSL's libcrypto EVP interface, and artifact integrity checks.
// Not installed, not part of the public API (runner.h exposes the result through Runner::open's checks).
#pragma once

#include <cstddef>
#include <string>

#include "vitedge/runner.h"

namespace vitedge {

/// Lower-case hex SHA-256 of `size` bytes at `data` (64 characters). Throws Error if libcrypto fails.
std::string sha256_hex(const void* data, size_t size);

/// Lower-case hex SHA-256 of the file at `path` (must be a regular file: opened O_NONBLOCK and fstat-checked,
/// so a FIFO cannot hang it), read in 1 MiB blocks. Throws Error("cannot open/read PATH: ...").
std::string sha256_file_hex(const std::string& path);

/// Lower-case hex SHA-256 of what remains to be read from the descriptor `fd` (1 MiB blocks). `path` labels errors.
std::string sha256_fd_hex(int fd, const std::string& path);

/// Check every file `manifest.files` covers, in name order: it exists inside `artifact_dir` (a symlink must not
/// lead outside it; a FIFO or device is refused), has the recorded size (when recorded) and the recorded
/// SHA-256. Every entry must carry a sha256 (an entry with "sha256": null is refused), and the main artifact
/// file must be covered (otherwise a manifest without "files" would silently skip the check). With
/// `include_artifact` false the main file's own size and digest are left to the caller (Runner::open checks them
/// on the bytes it hands the backend). Throws Error naming the first file that is missing or does not match,
/// with both digests.
void verify_artifact_files(const std::string& artifact_dir, const Manifest& manifest, bool include_artifact = true);

}  // namespace vitedge
