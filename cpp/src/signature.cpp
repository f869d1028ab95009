// OpenSSF model-signing bundle verification (key-based, elliptic curve) with OpenSSL's libcrypto.
#include "signature.h"

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include <cctype>
#include <memory>

#include <nlohmann/json.hpp>

#include "artifact_io.h"

namespace vitedge {
namespace {

using nlohmann::json;

constexpr const char* kBundleType = "application/vnd.dev.sigstore.bundle.v0.3+json";
constexpr const char* kPayloadType = "application/vnd.in-toto+json";
constexpr const char* kStatementType = "https://in-toto.io/Statement/v1";
constexpr const char* kPredicateType = "https://model_signing/signature/v1.0";
constexpr uint64_t kMaxKeyBytes = 64 * 1024;

// Strict base64 (RFC 4648, standard alphabet, padded, no whitespace). Returns false on any deviation.
bool base64_decode(const std::string& in, std::string& out) {
  if (in.size() % 4 != 0) return false;
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  out.clear();
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = in[i + k];
      if (c == '=' && last && k >= 2) {
        ++pad;
        v[k] = 0;
        continue;
      }
      if (pad) return false;  // data after '='
      v[k] = val(c);
      if (v[k] < 0) return false;
    }
    const uint32_t n = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out.push_back(static_cast<char>((n >> 16) & 0xff));
    if (pad < 2) out.push_back(static_cast<char>((n >> 8) & 0xff));
    if (pad < 1) out.push_back(static_cast<char>(n & 0xff));
  }
  return true;
}

using Pkey = std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)>;

struct Key {
  std::string path;
  Pkey pkey{nullptr, EVP_PKEY_free};
  const EVP_MD* md = nullptr;
};

Key load_key(const std::string& path) {
  const std::string pem = read_regular_file(path, kMaxKeyBytes, "public key");
  std::unique_ptr<BIO, int (*)(BIO*)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  if (!bio) throw Error("libcrypto: cannot allocate a BIO");
  Key k;
  k.path = path;
  k.pkey.reset(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!k.pkey) throw Error("public key " + path + " is not a PEM public key (-----BEGIN PUBLIC KEY-----)");
  if (EVP_PKEY_base_id(k.pkey.get()) != EVP_PKEY_EC)
    throw Error("public key " + path + " is not an elliptic-curve key (model-signing keys are EC P-256/384/521)");
  char group[80] = {0};
  size_t len = 0;
  if (EVP_PKEY_get_group_name(k.pkey.get(), group, sizeof(group), &len) != 1)
    throw Error("public key " + path + ": cannot read its curve");
  const std::string g = group;
  if (g == "prime256v1" || g == "P-256") k.md = EVP_sha256();
  else if (g == "secp384r1" || g == "P-384") k.md = EVP_sha384();
  else if (g == "secp521r1" || g == "P-521") k.md = EVP_sha512();
  else throw Error("public key " + path + " is on curve " + g + "; model-signing uses P-256, P-384 or P-521");
  return k;
}

bool verify_with(const Key& k, const std::string& message, const std::string& der_sig) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx) throw Error("libcrypto: cannot allocate a digest context");
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, k.md, nullptr, k.pkey.get()) != 1)
    throw Error("libcrypto: cannot start verifying with " + k.path);
  const int rc = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(der_sig.data()), der_sig.size(),
                                  reinterpret_cast<const unsigned char*>(message.data()), message.size());
  return rc == 1;
}

bool is_lower_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// A resource name: relative, no "..", no NUL/backslash, not empty, no "." components.
bool is_safe_name(const std::string& name) {
  if (name.empty() || name.size() > 1024 || name.front() == '/') return false;
  if (name.find('\0') != std::string::npos || name.find('\\') != std::string::npos) return false;
  size_t s = 0;
  while (s <= name.size()) {
    size_t e = name.find('/', s);
    if (e == std::string::npos) e = name.size();
    const std::string part = name.substr(s, e - s);
    if (part.empty() || part == "." || part == ".." || part.size() > 255) return false;
    s = e + 1;
  }
  return true;
}

const json& field(const json& obj, const char* key, const std::string& where, const std::string& origin) {
  if (!obj.is_object() || !obj.contains(key))
    throw Error("signature bundle " + origin + " is malformed: no \"" + key + "\" in " + where);
  return obj.at(key);
}

std::string string_field(const json& obj, const char* key, const std::string& where, const std::string& origin) {
  const json& v = field(obj, key, where, origin);
  if (!v.is_string())
    throw Error("signature bundle " + origin + " is malformed: \"" + key + "\" in " + where + " is not a string");
  return v.get<std::string>();
}

}  // namespace

std::map<std::string, std::string> verify_signature_bundle(const std::string& bundle_json,
                                                           const std::vector<std::string>& public_key_paths,
                                                           const std::string& origin) {
  if (public_key_paths.empty()) throw Error("no trusted public key given to verify " + origin);
  std::vector<Key> keys;
  for (const std::string& p : public_key_paths) keys.push_back(load_key(p));

  json bundle;
  try {
    bundle = json::parse(bundle_json);
  } catch (const json::exception&) {
    throw Error("signature bundle " + origin + " is not valid JSON");
  }
  std::string payload, statement_text;
  try {
    if (string_field(bundle, "mediaType", "the bundle", origin) != kBundleType)
      throw Error("signature bundle " + origin + " has mediaType '" + bundle["mediaType"].get<std::string>() +
                  "', expected " + kBundleType);
    const json& env = field(bundle, "dsseEnvelope", "the bundle", origin);
    const std::string type = string_field(env, "payloadType", "dsseEnvelope", origin);
    if (type != kPayloadType)
      throw Error("signature bundle " + origin + " has payloadType '" + type + "', expected " + kPayloadType);
    if (!base64_decode(string_field(env, "payload", "dsseEnvelope", origin), payload))
      throw Error("signature bundle " + origin + " is malformed: its payload is not valid base64");
    const json& sigs = field(env, "signatures", "dsseEnvelope", origin);
    if (!sigs.is_array() || sigs.empty())
      throw Error("signature bundle " + origin + " holds no signature");
    const std::string pae = "DSSEv1 " + std::to_string(type.size()) + " " + type + " " +
                            std::to_string(payload.size()) + " " + payload;
    bool ok = false;
    for (const json& s : sigs) {
      std::string der;
      if (!base64_decode(string_field(s, "sig", "a signature", origin), der))
        throw Error("signature bundle " + origin + " is malformed: a signature is not valid base64");
      for (const Key& k : keys)
        if (!ok && verify_with(k, pae, der)) ok = true;
    }
    if (!ok) {
      std::string names;
      for (const auto& p : public_key_paths) names += (names.empty() ? "" : ", ") + p;
      throw Error("signature " + origin + " does not verify with any trusted key (" + names +
                  "): the artifact was signed by another key or altered");
    }
    statement_text = payload;
  } catch (const json::exception& e) {
    throw Error("signature bundle " + origin + " is malformed: " + std::string(e.what()));
  }

  // The signed statement (only trusted from here on).
  std::map<std::string, std::string> files;
  try {
    const json st = json::parse(statement_text);
    if (string_field(st, "_type", "the statement", origin) != kStatementType)
      throw Error("signature " + origin + ": the signed statement is not an in-toto Statement v1");
    if (string_field(st, "predicateType", "the statement", origin) != kPredicateType)
      throw Error("signature " + origin + ": predicateType is not " + std::string(kPredicateType));
    const json& pred = field(st, "predicate", "the statement", origin);
    const json& ser = field(pred, "serialization", "the predicate", origin);
    if (string_field(ser, "method", "serialization", origin) != "files")
      throw Error("signature " + origin + ": serialization method is not \"files\" (sign with model-signing's "
                  "file serialization)");
    if (string_field(ser, "hash_type", "serialization", origin) != "sha256")
      throw Error("signature " + origin + ": serialization hash_type is not sha256");
    if (ser.contains("allow_symlinks") && !(ser["allow_symlinks"].is_boolean() && !ser["allow_symlinks"].get<bool>()))
      throw Error("signature " + origin + ": it was made with allow_symlinks; vitedge refuses symlinks");
    const json& res = field(pred, "resources", "the predicate", origin);
    if (!res.is_array()) throw Error("signature " + origin + ": resources is not a list");
    for (const json& r : res) {
      const std::string name = string_field(r, "name", "a resource", origin);
      const std::string algo = string_field(r, "algorithm", "a resource", origin);
      std::string digest = string_field(r, "digest", "a resource", origin);
      if (!is_safe_name(name)) throw Error("signature " + origin + ": resource name '" + name + "' is not a safe relative path");
      if (algo != "sha256") throw Error("signature " + origin + ": resource '" + name + "' uses algorithm " + algo);
      for (char& c : digest) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!is_lower_hex64(digest)) throw Error("signature " + origin + ": resource '" + name + "' has a malformed digest");
      if (!files.emplace(name, digest).second) throw Error("signature " + origin + ": resource '" + name + "' appears twice");
    }
  } catch (const json::exception& e) {
    throw Error("signature " + origin + ": the signed statement is malformed: " + std::string(e.what()));
  }
  return files;
}

}  // namespace vitedge
