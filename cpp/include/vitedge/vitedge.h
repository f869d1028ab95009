/* vitedge C ABI: embed the vitedge runner from C, Swift, Kotlin/JNI or Python ctypes (libvitedge.so).
 *
 *   vitedge_options o; vitedge_options_init(&o);
 *   const char* keys[] = {"pub.pem"}; o.trusted_keys = keys; o.num_trusted_keys = 1;   (model.sig is checked)
 *   vitedge_runner* r = NULL;
 *   if (vitedge_open("artifacts/vit_tiny_ts", &o, &r) != VITEDGE_OK) { puts(vitedge_last_error()); return 1; }
 *   int64_t shape[4]; size_t rank = 4;
 *   vitedge_input_shape(r, 1, shape, &rank);                        (1, 3, H, W) for batch 1
 *   float* x = malloc(3 * shape[2] * shape[3] * sizeof(float));
 *   vitedge_preprocess_file(r, "cat.jpg", x, 3 * shape[2] * shape[3]);
 *   vitedge_outputs* out = NULL;
 *   vitedge_run(r, x, shape, 4, &out);
 *   const float* logits = vitedge_output_data(out, 0);               named vitedge_output_name(out, 0)
 *   vitedge_outputs_free(out); vitedge_close(r); free(x);
 *
 * Every function that can fail returns a vitedge_status; on failure vitedge_last_error() holds a one-line
 * message (thread-local: valid on the calling thread until its next vitedge call). Nothing aborts the process
 * and no C++ exception crosses this boundary. Handles are opaque; a NULL handle is an error, not a crash.
 * vitedge_run may be called from several threads on one runner (see vitedge::Runner::run).
 * Tensors are float32, row-major (C-contiguous), NCHW for images.
 */
#ifndef VITEDGE_VITEDGE_H
#define VITEDGE_VITEDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vitedge_status {
  VITEDGE_OK = 0,
  VITEDGE_INVALID_ARGUMENT = 1, /* NULL pointer, buffer too small, bad index */
  VITEDGE_ERROR = 2,            /* vitedge::Error: bad artifact, backend not built, bad input shape, ... */
  VITEDGE_INTERNAL = 3          /* anything else (out of memory, unexpected exception) */
} vitedge_status;

typedef struct vitedge_runner vitedge_runner;   /* an open artifact */
typedef struct vitedge_outputs vitedge_outputs; /* the outputs of one vitedge_run */

/* Options of vitedge_open: a versioned struct (the model is ONNX Runtime's C API). struct_size, its FIRST member,
 * tells vitedge_open the layout the caller was compiled with: fill the struct with vitedge_options_init(&o) or
 * `vitedge_options o = VITEDGE_OPTIONS_INIT;` before setting fields. New fields are only ever appended, so a
 * library reads the struct of an older header (its struct_size smaller, at least VITEDGE_OPTIONS_SIZE_V1) with the
 * missing fields at their defaults. Refused with VITEDGE_INVALID_ARGUMENT and a message naming the size: a
 * struct_size of 0 (struct not initialized), below VITEDGE_OPTIONS_SIZE_V1, or above sizeof(vitedge_options) of this
 * library (a caller built against a newer vitedge.h than the library it runs with).
 *   version 1 (vitedge 0.1): struct_size .. allow_unsigned_code */
typedef struct vitedge_options {
  size_t struct_size; /* sizeof(vitedge_options) of the caller's header; set by vitedge_options_init */
  int threads;        /* intra-op CPU threads, 0 = runtime default (libtorch: process-wide) */
  const char* device; /* "cpu" (NULL = "cpu"), "cuda", "cuda:N" */
  int warmup;         /* untimed batch-1 runs inside vitedge_open */
  int verify;         /* nonzero: check the artifact files' SHA-256 against manifest.json (default 1) */
  /* PEM public key paths (EC P-256/384/521). num_trusted_keys > 0: ARTIFACT_DIR/model.sig (OpenSSF model-signing)
   * must verify with one of them and cover every file, for every target, before anything is loaded. */
  const char* const* trusted_keys;
  size_t num_trusted_keys;
  /* nonzero: without trusted keys, load code-bearing artifacts (TorchScript, AOTInductor) anyway (default 0:
   * they are refused; data formats load either way). */
  int allow_unsigned_code;
} vitedge_options;

/* The smallest struct_size vitedge_open accepts: the end of version 1's last field. */
#define VITEDGE_OPTIONS_SIZE_V1 (offsetof(vitedge_options, allow_unsigned_code) + sizeof(int))

/* Static initializer with the defaults of vitedge_options_init: vitedge_options o = VITEDGE_OPTIONS_INIT; */
#define VITEDGE_OPTIONS_INIT {sizeof(vitedge_options), 0, "cpu", 0, 1, NULL, 0, 0}

/* Fill *options with the defaults (struct_size, threads 0, device "cpu", warmup 0, verify 1, no trusted keys,
 * allow_unsigned_code 0). */
void vitedge_options_init(vitedge_options* options);

/* The last error message on this thread ("" if none). */
const char* vitedge_last_error(void);

/* The library version, e.g. "0.1.0". */
const char* vitedge_version(void);

/* Open an artifact: its folder (manifest.json + model file) or the model file in it (any other file: VITEDGE_ERROR,
 * see vitedge::Runner::open); options NULL = defaults (so a TorchScript or AOTInductor artifact is refused: it is
 * unsigned by any trusted key). An options->struct_size this library does not know (see vitedge_options):
 * VITEDGE_INVALID_ARGUMENT. *runner is NULL on failure. */
vitedge_status vitedge_open(const char* artifact, const vitedge_options* options, vitedge_runner** runner);

/* Close a runner (NULL is ignored). */
void vitedge_close(vitedge_runner* runner);

/* The runtime running the model ("libtorch", "aotinductor", ...); NULL for a NULL runner. Valid until close. */
const char* vitedge_runtime(const vitedge_runner* runner);

/* The input shape for `batch` (the manifest's, with dynamic dims filled from batch and the preprocessing size).
 * *rank: in = capacity of `shape`, out = the rank. */
vitedge_status vitedge_input_shape(const vitedge_runner* runner, int64_t batch, int64_t* shape, size_t* rank);

/* Number of class labels in the manifest (0 if none) and label i (NULL if out of range). Valid until close. */
size_t vitedge_num_labels(const vitedge_runner* runner);
const char* vitedge_label(const vitedge_runner* runner, size_t index);

/* Decode an image file (JPEG, PNG, ... via stb_image) / preprocess 8-bit interleaved RGB pixels (height x
 * width x 3) with the manifest's preprocessing into `out`: 3 * H * W floats (CHW, one image of the batch). */
vitedge_status vitedge_preprocess_file(const vitedge_runner* runner, const char* path, float* out, size_t capacity);
vitedge_status vitedge_preprocess_rgb(const vitedge_runner* runner, const uint8_t* rgb, int width, int height,
                                      float* out, size_t capacity);

/* Run one batch: `input` holds prod(shape) floats. *outputs is NULL on failure; free it with vitedge_outputs_free. */
vitedge_status vitedge_run(const vitedge_runner* runner, const float* input, const int64_t* shape, size_t rank,
                           vitedge_outputs** outputs);

/* Output accessors: count; name / rank / shape / data of output i (NULL or 0 if out of range). Valid until free. */
size_t vitedge_outputs_count(const vitedge_outputs* outputs);
const char* vitedge_output_name(const vitedge_outputs* outputs, size_t index);
size_t vitedge_output_rank(const vitedge_outputs* outputs, size_t index);
const int64_t* vitedge_output_shape(const vitedge_outputs* outputs, size_t index);
const float* vitedge_output_data(const vitedge_outputs* outputs, size_t index);
size_t vitedge_output_numel(const vitedge_outputs* outputs, size_t index);
void vitedge_outputs_free(vitedge_outputs* outputs);

#ifdef __cplusplus
}
#endif

#endif /* VITEDGE_VITEDGE_H */
