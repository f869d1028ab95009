// Runner: manifest checks, backend selection, input validation. No runtime headers here.
#include <cmath>
#include <filesystem>
#include <sstream>
#include <system_error>

#include "backend.h"
#include "sha256.h"
#include "vitedge/runner.h"

namespace vitedge {
namespace fs = std::filesystem;

namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << (shape.size() == 1 ? ",)" : ")");
  return os.str();
}

// Manifest shapes print -1 as "N" (dynamic) for readability.
std::string spec_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    os << (i ? ", " : "");
    if (shape[i] < 0) os << "any"; else os << shape[i];
  }
  os << ")";
  return os.str();
}

void check_file(const fs::path& dir, const std::string& name, int64_t expected_bytes) {
  const fs::path p = dir / name;
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) throw Error("artifact file " + p.string() + " is missing");
  const auto size = fs::file_size(p, ec);
  if (ec) throw Error("cannot stat " + p.string() + ": " + ec.message());
  if (expected_bytes >= 0 && static_cast<int64_t>(size) != expected_bytes)
    throw Error("artifact file " + p.string() + " has " + std::to_string(size) + " bytes but the manifest records " +
                std::to_string(expected_bytes) + " (truncated or replaced?)");
}

}  // namespace

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Runner::Runner(std::string dir, Manifest manifest, std::unique_ptr<Backend> backend)
    : dir_(std::move(dir)), manifest_(std::move(manifest)), backend_(std::move(backend)) {}

Runner::~Runner() = default;

std::unique_ptr<Runner> Runner::open(const std::string& artifact_dir, const Options& options) {
  std::error_code ec;
  if (!fs::is_directory(artifact_dir, ec))
    throw Error("artifact directory '" + artifact_dir + "' does not exist or is not a directory");
  if (options.threads < 0) throw Error("threads must be >= 0, got " + std::to_string(options.threads));
  Manifest m = read_manifest(artifact_dir);
  if (m.backend != "libtorch")
    throw Error("backend '" + m.backend + "' (target '" + m.target +
                "') is not built into this vitedge runner; built backends: libtorch (target torchscript)");
  if (m.target != "torchscript")
    throw Error("target '" + m.target + "' of backend libtorch is not supported by this vitedge runner; "
                "supported: torchscript");
  // parse_manifest has already refused file names that leave the artifact directory.
  if (options.verify) verify_artifact_files(artifact_dir, m);  // sizes + SHA-256, names the mismatching file
  check_file(artifact_dir, m.artifact, -1);
  const auto& in = m.inputs.front();
  if (in.dtype != "float32")
    throw Error("input '" + in.name + "' has dtype " + in.dtype + "; this runner feeds float32 only");
  auto backend = make_torchscript_backend((fs::path(artifact_dir) / m.artifact).string(), options);
  return std::unique_ptr<Runner>(new Runner(artifact_dir, std::move(m), std::move(backend)));
}

std::vector<Tensor> Runner::run(const Tensor& input) {
  const TensorSpec& spec = manifest_.inputs.front();
  bool ok = input.shape.size() == spec.shape.size();
  for (size_t i = 0; ok && i < spec.shape.size(); ++i)
    ok = input.shape[i] >= 1 && (spec.shape[i] < 0 || spec.shape[i] == input.shape[i]);
  if (!ok)
    throw Error("input shape " + shape_str(input.shape) + " does not match the artifact's input '" + spec.name +
                "' of shape " + spec_str(spec.shape) + " (\"any\" = dynamic)");
  if (static_cast<int64_t>(input.data.size()) != input.numel())
    throw Error("input tensor holds " + std::to_string(input.data.size()) + " values but its shape " +
                shape_str(input.shape) + " needs " + std::to_string(input.numel()));
  // A NaN/Inf input would give NaN logits silently (or a meaningless argmax): refuse it, naming the element.
  for (size_t i = 0; i < input.data.size(); ++i)
    if (!std::isfinite(input.data[i]))
      throw Error("input holds a non-finite value (" + std::string(std::isnan(input.data[i]) ? "NaN" : "Inf") +
                  ") at flat index " + std::to_string(i) + "; inputs must be finite float32");
  return backend_->run(input);
}

}  // namespace vitedge
