// vitedge C++ runner: load an exported vitedge artifact (a directory holding manifest.json and the model
// file it names) and run batches through it.
//
//   auto runner = vitedge::Runner::open("artifacts/vit_tiny_ts");           // the folder, or its model file
//   vitedge::Tensor x = runner->load_image("cat.jpg");                       // (1, 3, H, W), manifest preprocessing
//   std::vector<vitedge::Tensor> outputs = runner->run(x);
//   const vitedge::Tensor& logits = vitedge::output(outputs, "logits");      // shape (1, num_classes)
//
// Every failure (missing or malformed artifact, unsupported backend, undecodable image, input of the wrong
// shape, an error inside the runtime) is reported by throwing vitedge::Error with a readable message; the
// runner never aborts the process on bad input. There is no global state, with one libtorch exception:
// Options::threads sets libtorch's process-wide intra-op thread count. The C ABI is vitedge/vitedge.h.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace vitedge {

/// The one exception type thrown by this library. what() is a single human-readable line.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A dense, row-major (C-contiguous) float32 tensor. Invariant: data.size() == product of shape.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  std::string name;  // outputs: the manifest's output name ("logits", ...); ignored on input

  /// Number of elements the shape describes (1 for a scalar shape {}).
  int64_t numel() const;
};

/// One input or output of the exported graph. A dynamic dimension is -1.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;  // "float32" for every artifact this runner accepts as input
};

/// The manifest's "preprocessing" block (CONVENTIONS.md).
struct Preprocessing {
  int height = 0, width = 0;           // "size": [H, W]
  std::string resize = "cover";        // resize so the image covers (H, W), keeping the aspect ratio
  std::string crop = "center";
  std::string interpolation = "bilinear";
  float scale = 1.0f / 255.0f;         // pixel (0..255) * scale
  std::array<float, 3> mean{0.f, 0.f, 0.f};
  std::array<float, 3> std{1.f, 1.f, 1.f};
  std::string layout = "NCHW";
  std::string color = "RGB";
};

/// The fields of manifest.json (schema_version 1) the runner uses. Unknown fields are ignored.
struct Manifest {
  int schema_version = 0;
  std::string artifact;   // main file, relative to the artifact directory
  std::string target;     // "torchscript" | "onnx" | ...
  std::string backend;    // "libtorch" | "onnxruntime" | ...
  std::string precision;  // "fp32" | "fp16" | "int8" ...
  std::vector<TensorSpec> inputs, outputs;
  std::optional<Preprocessing> preprocessing;
  std::vector<std::string> labels;                 // empty when the manifest has "labels": null
  std::map<std::string, int64_t> file_bytes;       // "files": {name: {"bytes": n}}; -1 when bytes absent
  std::map<std::string, std::string> file_sha256;  // "files": {name: {"sha256": hex}}; lower-case, 64 hex digits
  /// onnxruntime.graph_optimization_level ("ORT_DISABLE_ALL" ... "ORT_ENABLE_ALL"); empty when absent.
  std::string ort_graph_optimization_level;
  /// onnxruntime.session_config, then quantization.session_config (it wins on a shared key), in manifest order.
  /// Only the keys vitedge writes are accepted (session.intra_op.allow_spinning, session.inter_op.allow_spinning,
  /// session.disable_quant_qdq), each "0" or "1": parse_manifest refuses any other key or value.
  std::vector<std::pair<std::string, std::string>> ort_session_config;
  /// OpenVINO artifacts (target "openvino"): the IR weights file, relative to the artifact directory:
  /// openvino.weights (default: the artifact's name with ".bin") in the folder of "artifact". Empty for other targets.
  std::string openvino_weights;
  /// openvino.config, the compile properties vitedge writes, in key order; absent (nullopt) when the manifest
  /// has none (the backend then applies the precision's default, as the Python loader does). Only these keys and
  /// values are accepted, as in vitedge/targets/openvino.py: PERFORMANCE_HINT LATENCY|THROUGHPUT,
  /// INFERENCE_PRECISION_HINT f32|bf16|f16, EXECUTION_MODE_HINT PERFORMANCE|ACCURACY; anything else is refused.
  std::optional<std::vector<std::pair<std::string, std::string>>> openvino_config;
};

/// Parse manifest JSON text. `origin` (a path) only labels error messages.
/// Throws Error on invalid JSON, a missing/mistyped required field, schema_version > 1, a "files" entry whose
/// sha256 is not 64 hex digits, or a file name (in "files" or "artifact") that is empty, absolute or has a
/// ".." component (it must stay inside the artifact directory), a preprocessing.size that differs from the
/// input's fixed (H, W), an ONNX Runtime session_config key/value or graph level vitedge does not write, or an
/// "openvino" block that is not an object, whose "weights" is not a file name inside the folder, or whose
/// "config" holds a key or value vitedge does not apply.
/// Does not check that the backend is available (Runner::open does).
Manifest parse_manifest(const std::string& json_text, const std::string& origin = "manifest.json");

/// Read and parse the manifest.json of an artifact: `artifact` is its folder or the model file in it (as for
/// Runner::open). Throws Error: a path that is neither (see Runner::open), missing manifest, not a regular file (a
/// FIFO or device is refused without blocking), over 16 MiB (checked before reading), see parse_manifest.
Manifest read_manifest(const std::string& artifact);

struct Options {
  /// Intra-op CPU threads; 0 keeps the runtime's default. Note: for libtorch this is process-wide.
  int threads = 0;
  /// "cpu", "cuda" or "cuda:N" (libtorch backends: TorchScript, AOTInductor; an AOTInductor package must have
  /// been compiled for that device). CUDA without a CUDA libtorch or GPU: Error at open.
  std::string device = "cpu";
  /// Untimed runs of a batch-1 zero input inside open(), so the first real run() is not the slow one.
  int warmup = 0;
  /// Check the SHA-256 (and size) of every file the manifest covers before loading (default). false skips it.
  bool verify = true;
  /// ONNX Runtime artifacts: the libonnxruntime.so to dlopen. Empty: $VITEDGE_ONNXRUNTIME_LIB, else the copy
  /// installed with libvitedge (lib/vitedge/backends/onnxruntime/libonnxruntime.so.1), else "libonnxruntime.so.1"
  /// through the dynamic loader.
  std::string onnxruntime_library;
  /// PEM public keys (paths; elliptic-curve P-256/P-384/P-521, as OpenSSF model-signing writes them). Not empty:
  /// ARTIFACT_DIR/model.sig must be a model-signing signature that verifies with one of them and covers every
  /// file of the folder (no extra, missing or changed file, no symlink) before anything is loaded, for every
  /// target; a missing or bad signature is an Error.
  std::vector<std::string> trusted_keys;
  /// Without trusted_keys, code-bearing artifacts (target torchscript: TorchScript runs code when it is loaded;
  /// aotinductor: a .pt2 holds a shared library whose constructors run on load) are refused unless this is true.
  /// Data formats (onnx, executorch, trt) load either way.
  bool allow_unsigned_code = false;
};

class Backend;  // internal, one per runtime (src/backend.h)

class Runner {
 public:
  /// Open the artifact at `path`: its folder, or the model file in it (the file its manifest names in
  /// "artifact", e.g. artifacts/vit_tiny_ts/model.pt; symlinks followed, the folder is the file path's parent).
  /// Any other file is refused with an Error naming it: manifest.json, another file of the folder (model.sig,
  /// OpenVINO's .bin), a file with no manifest.json beside it, a model file whose folder's manifest names another.
  /// Then: reads manifest.json, checks its signature when options.trusted_keys
  /// is not empty (else refuses a code-bearing target unless options.allow_unsigned_code), checks schema_version
  /// and that its backend/target is built into this library (see backends(); libtorch: torchscript and
  /// aotinductor), checks the artifact files exist and have the sizes and SHA-256 the manifest records (unless
  /// options.verify is false), and loads the model from the very bytes that were hashed (each file is read
  /// once; a file swapped on disk after the check is never loaded).
  /// Throws Error with the reason otherwise. May be called from several threads at once (AOTInductor packages
  /// are loaded one at a time: libtorch's package loader is not thread-safe).
  static std::unique_ptr<Runner> open(const std::string& path, const Options& options = {});

  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  const Manifest& manifest() const { return manifest_; }
  /// The artifact folder (the path given to open, or the model file's folder when a file was given).
  const std::string& artifact_dir() const { return dir_; }
  const Options& options() const { return options_; }
  /// The runtime that runs the model: "libtorch", "aotinductor", "onnxruntime", ...
  std::string runtime() const;

  /// Decode and preprocess an image file (or encoded bytes) as the manifest says: (1, 3, H, W) float32.
  /// Throws Error if the manifest has no preprocessing block or the image cannot be decoded.
  Tensor load_image(const std::string& path) const;

  /// Run one batch. `input` must be float32 with the manifest's first input shape, where a -1 (dynamic)
  /// dimension accepts any size >= 1 — for image models (N, 3, H, W). Returns the graph's outputs in the
  /// manifest's order as float32 tensors named as the manifest's outputs (a tuple/list/dict output is
  /// flattened in order). Throws Error on a shape mismatch, a NaN/Inf input value, or a runtime failure.
  /// Thread-safe: several threads may call run() on one Runner at once (TorchScript runs them concurrently,
  /// AOTInductor one at a time); results equal single-threaded runs (tested by cpp_threads).
  std::vector<Tensor> run(const Tensor& input) const;

 private:
  friend std::vector<double> time_backend_loop(Runner&, const Tensor&, int, int);
  Runner(std::string dir, Manifest manifest, Options options, std::unique_ptr<Backend> backend);
  std::string dir_;
  Manifest manifest_;
  Options options_;
  std::unique_ptr<Backend> backend_;
};

/// The output called `name` among run()'s outputs. Throws Error naming the outputs there are.
const Tensor& output(const std::vector<Tensor>& outputs, const std::string& name);

/// One row per backend this runner knows: manifest target and backend, and whether it is built in.
struct BackendInfo {
  std::string target, backend;
  bool built = false;
  std::string rebuild_hint;  // when not built: the CMake option and what it needs
};
std::vector<BackendInfo> backends();

/// Preprocess an 8-bit RGB image already in memory (`height` x `width` x 3, row-major, interleaved) as
/// load_image does after decoding: (1, 3, p.height, p.width) float32. Throws Error on a bad size or null data.
Tensor preprocess_rgb(const unsigned char* rgb, int width, int height, const Preprocessing& p);

/// Decode an image file (JPEG, PNG or BMP, via stb_image; other formats are refused) to 8-bit RGB
/// (16-bit PNG samples: v >> 8; grey replicated; alpha dropped), apply its EXIF orientation (JPEG APP1 Exif,
/// PNG eXIf; the rule of vitedge/data.py), and preprocess it as CONVENTIONS.md says. The file must be a regular
/// file of at most 2^31 - 1 bytes: a FIFO, device or directory is refused without blocking, and the size is
/// checked (fstat) before anything is read. If it is not already (H, W) = p.height x p.width, resize
/// (bilinear) keeping the aspect ratio so that it covers (H, W) — factor max(H/h, W/w), output dims
/// rounded half to even — then center-crop (offset floor((dim - target) / 2)); finally
/// value = (float(pixel) * p.scale - p.mean[c]) / p.std[c] in float32, in that order.
/// Returns a (1, 3, H, W) NCHW tensor. Throws Error("cannot decode image PATH: <reason>").
Tensor load_image(const std::string& path, const Preprocessing& p);

/// As load_image, from an encoded image held in memory (`size` bytes at `bytes`; EXIF orientation applied). Images over
/// kMaxImagePixels decoded pixels, or whose cover-resize would exceed that many pixels (extreme aspect
/// ratios), are refused. Throws Error("cannot decode image <in memory>: <reason>").
Tensor load_image_from_memory(const unsigned char* bytes, size_t size, const Preprocessing& p);

/// Largest decoded or resized image load_image accepts, in pixels (2^26 = 67 megapixels; ~200 MB as RGB).
constexpr int64_t kMaxImagePixels = int64_t{1} << 26;

/// Latency summary, all in the unit of the samples.
struct Stats {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, min = 0, max = 0;
};

/// q-th percentile (0 <= q <= 100) with linear interpolation between closest ranks, as
/// numpy.percentile's default ("linear"): rank = q/100 * (n-1), interpolate between floor and ceil.
/// Throws Error for an empty sample or q outside [0, 100].
double percentile(std::vector<double> samples, double q);

/// mean, p50, p90, p99, min, max of `samples`. Throws Error for an empty sample.
Stats summarize(const std::vector<double>& samples);

}  // namespace vitedge
