/* Compiled as C: megatax_c.h must be plain C (C99). A small end-to-end use of the API,
 * called from capi_test.cc; returns 0 on success, else the number of the failed step and
 * a message in msg. */
#include "megatax/megatax_c.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>

int megatax_capi_c_smoke(char* msg, size_t msg_len);

#define STEP(n, call)                                                                 \
  do {                                                                                \
    int status_ = (call);                                                             \
    if (status_ != MEGATAX_OK) {                                                      \
      snprintf(msg, msg_len, "step %d: %s: %s", (n), megatax_status_name(status_),    \
               megatax_last_error());                                                 \
      megatax_index_destroy(index);                                                   \
      return (n);                                                                     \
    }                                                                                 \
  } while (0)

int megatax_capi_c_smoke(char* msg, size_t msg_len) {
  megatax_index_t* index = NULL;
  megatax_search_options_t opts;
  float x[3 * 2] = {0.f, 0.f, 1.f, 0.f, 0.f, 2.f};
  float q[2] = {0.9f, 0.1f};
  float distances[4];
  int64_t ids[4];
  int64_t ntotal = 0, dim = 0;
  int status;

  STEP(1, megatax_index_create(2, MEGATAX_METRIC_L2, MEGATAX_DTYPE_F32, &index));
  STEP(2, megatax_index_add(index, 3, x));
  STEP(3, megatax_index_ntotal(index, &ntotal));
  STEP(4, megatax_index_dim(index, &dim));
  STEP(5, megatax_search_options_init(&opts));
  opts.threads = 1;
  STEP(6, megatax_index_search(index, 1, q, 4, distances, ids, &opts));
  if (ntotal != 3 || dim != 2 || ids[0] != 1 || ids[1] != 0 || ids[2] != 2 || ids[3] != -1 ||
      fabsf(distances[0] - 0.02f) > 1e-6f || !isinf(distances[3])) {
    snprintf(msg, msg_len, "wrong results: ntotal %lld dim %lld ids %lld %lld %lld %lld",
             (long long)ntotal, (long long)dim, (long long)ids[0], (long long)ids[1],
             (long long)ids[2], (long long)ids[3]);
    megatax_index_destroy(index);
    return 100;
  }
  status = megatax_index_search(index, 1, q, 0, distances, ids, NULL);
  if (status != MEGATAX_INVALID_ARGUMENT || megatax_last_error()[0] == '\0') {
    snprintf(msg, msg_len, "k = 0 gave status %d", status);
    megatax_index_destroy(index);
    return 101;
  }
  megatax_index_destroy(index);
  megatax_index_destroy(NULL);
  msg[0] = '\0';
  return 0;
}

/* The version-2 taxonomy settings from C: the config fields exist with their defaults and
 * the new functions translate a null handle into INVALID_ARGUMENT. Returns 0 on success. */
int megatax_capi_c_taxonomy_v2(char* msg, size_t msg_len);

int megatax_capi_c_taxonomy_v2(char* msg, size_t msg_len) {
#if MEGATAX_C_API_VERSION >= 2
  megatax_taxonomy_config_t cfg;
  float x[2] = {0.f, 1.f};
  int32_t paths[2];
  int64_t rows = 0, changed = 0;
  if (megatax_taxonomy_config_init(&cfg) != MEGATAX_OK || cfg.balance != 0 || cfg.hnsw_threshold <= 0 ||
      cfg.hnsw_ef < 1 || cfg.hnsw_m < 2 || cfg.min_branching != 2) {
    snprintf(msg, msg_len, "config_init: unexpected defaults");
    return 1;
  }
  cfg.balance = 1;
  cfg.min_node_size = 10;
  cfg.max_leaf_size = 100;
  cfg.hnsw_threshold = 0;
  if (megatax_taxonomy_set_search(NULL, 1, 0) != MEGATAX_INVALID_ARGUMENT ||
      megatax_taxonomy_predict_beam(NULL, 1, x, 2, paths, NULL, &changed) != MEGATAX_INVALID_ARGUMENT ||
      megatax_taxonomy_predict_files_beam(NULL, "a", "b", 2, &rows, &changed) != MEGATAX_INVALID_ARGUMENT) {
    snprintf(msg, msg_len, "a null taxonomy was not refused");
    return 2;
  }
#endif
  msg[0] = '\0';
  return 0;
}
