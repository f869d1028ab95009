/* vitedge_c_api_test TORCHSCRIPT_DIR AOTINDUCTOR_DIR IMAGE TEXT_FILE: the C ABI from C (also the test the
 * sanitizer build runs). For each artifact: preprocess a real photo, run batch 1 and batch 2 (both rows must
 * equal the batch-1 result exactly), check output name/shape; then bad input gives the expected status and a
 * one-line message. Exit code = number of failures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vitedge/vitedge.h"

static int failures = 0;

static void check(int cond, const char* what) {
  if (!cond) {
    ++failures;
    fprintf(stderr, "FAIL: %s (last error: %s)\n", what, vitedge_last_error());
  }
}

static void expect(vitedge_status got, vitedge_status want, const char* phrase, const char* what) {
  const char* msg = vitedge_last_error();
  const int ok = got == want && strstr(msg, phrase) != NULL && strchr(msg, '\n') == NULL;
  printf("%s %s: status %d: %s\n", ok ? "ok  " : "FAIL", what, (int)got, msg);
  failures += !ok;
}

static const char* trusted_key; /* argv[5]: the fixtures' public key (they are signed) */

static void run_artifact(const char* dir, const char* image) {
  vitedge_options opt;
  vitedge_options_init(&opt);
  opt.threads = 1;
  opt.warmup = 1;
  opt.trusted_keys = &trusted_key;
  opt.num_trusted_keys = 1;
  vitedge_runner* r = NULL;
  if (vitedge_open(dir, &opt, &r) != VITEDGE_OK) {
    check(0, "vitedge_open");
    return;
  }
  int64_t shape[8];
  size_t rank = 8;
  check(vitedge_input_shape(r, 2, shape, &rank) == VITEDGE_OK && rank == 4 && shape[0] == 2, "input shape");
  const size_t one = (size_t)(shape[1] * shape[2] * shape[3]);
  float* x = malloc(2 * one * sizeof(float));
  check(vitedge_preprocess_file(r, image, x, one) == VITEDGE_OK, "preprocess file");
  memcpy(x + one, x, one * sizeof(float));
  vitedge_outputs *o1 = NULL, *o2 = NULL;
  shape[0] = 1;
  check(vitedge_run(r, x, shape, 4, &o1) == VITEDGE_OK, "run batch 1");
  shape[0] = 2;
  check(vitedge_run(r, x, shape, 4, &o2) == VITEDGE_OK, "run batch 2");
  if (o1 && o2) {
    const size_t n = vitedge_output_numel(o1, 0);
    check(vitedge_outputs_count(o1) == 1 && strcmp(vitedge_output_name(o1, 0), "logits") == 0, "output name");
    check(vitedge_output_rank(o2, 0) == 2 && vitedge_output_shape(o2, 0)[0] == 2 && vitedge_output_numel(o2, 0) == 2 * n,
          "batch-2 output shape");
    const float* a = vitedge_output_data(o1, 0);
    const float* b = vitedge_output_data(o2, 0);
    float worst = 0;
    size_t top = 0;
    for (size_t i = 0; i < n; ++i) {
      const float d0 = a[i] - b[i], d1 = a[i] - b[n + i];
      worst = d0 * d0 > worst ? d0 * d0 : worst;
      worst = d1 * d1 > worst ? d1 * d1 : worst;
      if (a[i] > a[top]) top = i;
    }
    check(worst <= 1e-10f, "batch-2 rows equal the batch-1 result");
    printf("%s (%s): top-1 class %zu (%s), logit %.4f\n", dir, vitedge_runtime(r), top,
           vitedge_label(r, top) ? vitedge_label(r, top) : "-", a[top]);
  }
  vitedge_outputs_free(o1);
  vitedge_outputs_free(o2);
  free(x);
  vitedge_close(r);
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: vitedge_c_api_test TORCHSCRIPT_DIR AOTINDUCTOR_DIR IMAGE TEXT_FILE PUB.pem\n");
    return 2;
  }
  trusted_key = argv[5];
  run_artifact(argv[1], argv[3]);
  run_artifact(argv[2], argv[3]);

  vitedge_runner* r = NULL;
  expect(vitedge_open("/nonexistent/artifact", NULL, &r), VITEDGE_ERROR, "does not exist", "missing artifact");
  check(r == NULL, "no handle after a failed open");
  expect(vitedge_open(NULL, NULL, &r), VITEDGE_INVALID_ARGUMENT, "NULL", "NULL artifact_dir");
  vitedge_options opt;
  vitedge_options_init(&opt);
  opt.device = "tpu";
  expect(vitedge_open(argv[1], &opt, &r), VITEDGE_ERROR, "device must be", "bad device");
  opt.device = "cuda";
  opt.allow_unsigned_code = 1;
  expect(vitedge_open(argv[1], &opt, &r), VITEDGE_ERROR, "cuda", "cuda device without CUDA (or a GPU build: a handle)");
  if (r) vitedge_close(r), r = NULL;
  /* The trust rule: without keys a TorchScript artifact is refused unless allow_unsigned_code. */
  expect(vitedge_open(argv[1], NULL, &r), VITEDGE_ERROR, "runs code when it is loaded and it is not signed by a trusted key",
         "unsigned TorchScript, default options");
  /* struct_size: 0 (not initialized), below version 1, above this header's (a newer caller): refused, nothing opened */
  vitedge_options_init(&opt);
  opt.allow_unsigned_code = 1;
  opt.struct_size = 0;
  expect(vitedge_open(argv[1], &opt, &r), VITEDGE_INVALID_ARGUMENT, "not initialized", "options struct_size 0");
  opt.struct_size = VITEDGE_OPTIONS_SIZE_V1 - 1;
  expect(vitedge_open(argv[1], &opt, &r), VITEDGE_INVALID_ARGUMENT, "struct_size", "options struct_size below V1");
  opt.struct_size = sizeof(opt) + 8;
  expect(vitedge_open(argv[1], &opt, &r), VITEDGE_INVALID_ARGUMENT, "newer vitedge.h", "options struct_size of a newer header");
  check(r == NULL, "no handle after a refused struct_size");
  /* version 1's exact size (no tail padding) and the static initializer are accepted */
  opt.struct_size = VITEDGE_OPTIONS_SIZE_V1;
  check(vitedge_open(argv[1], &opt, &r) == VITEDGE_OK, "open with struct_size VITEDGE_OPTIONS_SIZE_V1");
  if (r) vitedge_close(r), r = NULL;
  {
    vitedge_options s = VITEDGE_OPTIONS_INIT;
    vitedge_options d;
    vitedge_options_init(&d);
    check(s.struct_size == d.struct_size && s.threads == d.threads && strcmp(s.device, d.device) == 0 &&
              s.warmup == d.warmup && s.verify == d.verify && s.trusted_keys == d.trusted_keys &&
              s.num_trusted_keys == d.num_trusted_keys && s.allow_unsigned_code == d.allow_unsigned_code,
          "VITEDGE_OPTIONS_INIT equals vitedge_options_init");
    s.allow_unsigned_code = 1;
    check(vitedge_open(argv[1], &s, &r) == VITEDGE_OK, "open with VITEDGE_OPTIONS_INIT");
    if (r) vitedge_close(r), r = NULL;
  }
  vitedge_options_init(&opt);
  opt.num_trusted_keys = 1; /* trusted_keys left NULL */
  expect(vitedge_open(argv[1], &opt, &r), VITEDGE_INVALID_ARGUMENT, "trusted_keys is NULL", "num_trusted_keys without keys");
  const char* not_a_key = argv[4];
  opt.trusted_keys = &not_a_key;
  expect(vitedge_open(argv[1], &opt, &r), VITEDGE_ERROR, "is not a PEM public key", "a text file as trusted key");
  check(r == NULL, "no handle after a refused open");
  vitedge_options_init(&opt);
  opt.allow_unsigned_code = 1;
  check(vitedge_open(argv[1], &opt, &r) == VITEDGE_OK, "open with allow_unsigned_code");
  float buf[3 * 64 * 64];
  expect(vitedge_preprocess_file(r, argv[4], buf, 3 * 64 * 64), VITEDGE_ERROR, "cannot decode image", "text file as image");
  int64_t bad_shape[4] = {1, 3, 32, 32};
  vitedge_outputs* o = NULL;
  expect(vitedge_run(r, buf, bad_shape, 4, &o), VITEDGE_ERROR, "does not match", "wrong input shape");
  check(o == NULL, "no outputs after a failed run");
  expect(vitedge_run(NULL, buf, bad_shape, 4, &o), VITEDGE_INVALID_ARGUMENT, "NULL", "NULL runner");
  expect(vitedge_run(r, buf, bad_shape, 0, &o), VITEDGE_INVALID_ARGUMENT, "rank", "rank 0");
  vitedge_close(r);
  vitedge_close(NULL);
  vitedge_outputs_free(NULL);
  printf("%d failure(s)\n", failures);
  return failures;
}
