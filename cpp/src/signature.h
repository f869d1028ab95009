// Internal: verification of an OpenSSF model-signing (1.x) bundle, ARTIFACT_DIR/model.sig, with OpenSSL.
// Not installed; Runner::open uses it when Options::trusted_keys is not empty.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "vitedge/runner.h"

namespace vitedge {

/// The signature file's name inside an artifact directory (model-signing's default).
constexpr const char* kSignatureFile = "model.sig";

/// Check a model-signing bundle (the JSON text of model.sig) against PEM public keys and return the signed
/// file list: relative name -> lower-case hex SHA-256.
///
/// The bundle must be a Sigstore bundle ("mediaType" application/vnd.dev.sigstore.bundle.v0.3+json) whose
/// "dsseEnvelope" has payloadType application/vnd.in-toto+json and at least one signature; one of them must be an
/// ECDSA signature (DER) over the DSSE pre-authentication encoding
/// "DSSEv1" SP len(type) SP type SP len(payload) SP payload that verifies with one of `public_key_paths`
/// (PEM SubjectPublicKeyInfo of an elliptic-curve key: P-256 with SHA-256, P-384 with SHA-384, P-521 with SHA-512).
/// The payload must be an in-toto Statement v1 with predicateType https://model_signing/signature/v1.0 and a
/// serialization of method "files", hash_type "sha256", allow_symlinks false, whose resources each have a
/// relative name (no "..", no absolute path, no duplicate), algorithm "sha256" and a 64-hex digest.
/// `origin` (the bundle's path) labels errors. Throws Error: an unreadable key file or a key that is not an EC
/// key on one of those curves, a malformed bundle (bad JSON, bad base64, a wrong type), or no valid signature.
std::map<std::string, std::string> verify_signature_bundle(const std::string& bundle_json,
                                                           const std::vector<std::string>& public_key_paths,
                                                           const std::string& origin);

}  // namespace vitedge
