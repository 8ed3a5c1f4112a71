/* megatax/megatax_c.h -- the C API of Mega-Taxonomy (exact flat index and taxonomy engine).
 *
 * Pure C (C99 and later; C++ compatible). A thin translation of megatax/index_flat.h: the
 * semantics, result order and messages are those of megatax::IndexFlat.
 *
 * Status codes. Every function that can fail returns an int status: MEGATAX_OK (0) on
 * success, else one of the MEGATAX_* codes below (the values of megatax::ErrorCode; they
 * never change). On failure, megatax_last_error() returns a message naming the argument,
 * row, file or field and what was expected; outputs are then left as documented per
 * function. No C++ exception ever crosses this API.
 *
 * Matrix layout: a matrix of n vectors of dimension d is n * d contiguous elements,
 * row-major: element (i, j) at x[i * d + j].
 *
 * Thread-safety: megatax_index_search, megatax_index_ntotal, megatax_index_dim and
 * megatax_index_save may run concurrently on the same index; megatax_index_add,
 * megatax_index_add_typed, megatax_index_reset and megatax_index_destroy need exclusive
 * access to it. Different indexes are independent. megatax_last_error() is per thread.
 *
 * Versions. MEGATAX_C_API_VERSION grows by one whenever this header gains functions or
 * struct fields; nothing is ever removed, renumbered or reordered: struct fields are only
 * appended, and status codes and constants keep their values. The library is static, so a
 * program is compiled with the header of the library it links; code that must build against
 * several versions tests MEGATAX_C_API_VERSION. Structs are filled by their *_init
 * function before fields are changed, so fields a program does not know keep their defaults.
 *   1: the flat index; the taxonomy (create/load/fit/predict/predict_files, levels, dim).
 *   2: taxonomy balancing and HNSW fields in megatax_taxonomy_config_t,
 *      megatax_taxonomy_set_search, megatax_taxonomy_predict_beam,
 *      megatax_taxonomy_predict_files_beam.
 *   3: device fields in megatax_taxonomy_config_t (fits on a GPU),
 *      megatax_taxonomy_predict_device, megatax_taxonomy_predict_files_device,
 *      megatax_taxonomy_release_gpu.
 *   4: devices / n_devices in megatax_search_options_t (the flat index over several GPUs).
 */
#ifndef MEGATAX_MEGATAX_C_H_
#define MEGATAX_MEGATAX_C_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MEGATAX_C_API_VERSION 4

/* ---- status codes (= megatax::ErrorCode) ------------------------------------------------ */
#define MEGATAX_OK 0
#define MEGATAX_INVALID_ARGUMENT 1 /* fix the call: null pointer, bad shape, dtype, k */
#define MEGATAX_NOT_FOUND 2        /* the named file does not exist */
#define MEGATAX_ALREADY_EXISTS 3
#define MEGATAX_OUT_OF_RANGE 4
#define MEGATAX_FAILED_PRECONDITION 5
#define MEGATAX_DATA_LOSS 6 /* corrupt or truncated file */
#define MEGATAX_IO_ERROR 7  /* the OS refused a read/write (errno text in message) */
#define MEGATAX_UNAVAILABLE 8
#define MEGATAX_UNIMPLEMENTED 9       /* e.g. the CUDA backend, an unsupported SIMD level */
#define MEGATAX_RESOURCE_EXHAUSTED 10 /* out of memory */
#define MEGATAX_CANCELLED 11
#define MEGATAX_INTERNAL 12 /* a bug of ours: please report */

/* ---- enumerations ----------------------------------------------------------------------- */
/* Metrics. L2: squared Euclidean distance, smallest first. IP: inner product, largest first. */
#define MEGATAX_METRIC_L2 0
#define MEGATAX_METRIC_IP 1

/* Element types. F32/F16/BF16 may be an index's storage type; U8 (bytes 0..255, converted
 * by value) is accepted as input of megatax_index_add_typed only. */
#define MEGATAX_DTYPE_F32 0
#define MEGATAX_DTYPE_F16 1  /* IEEE binary16 bits in uint16_t */
#define MEGATAX_DTYPE_BF16 2 /* bfloat16 bits (upper half of a binary32) in uint16_t */
#define MEGATAX_DTYPE_U8 3

/* Backends. AUTO picks the CPU today; CUDA fails with MEGATAX_UNIMPLEMENTED until built. */
#define MEGATAX_BACKEND_AUTO 0
#define MEGATAX_BACKEND_CPU 1
#define MEGATAX_BACKEND_CUDA 2

/* An exact flat index (opaque). Created by megatax_index_create or megatax_index_load,
 * owned by the caller, freed by megatax_index_destroy. */
typedef struct megatax_index megatax_index_t;

/* Per-search settings. Fill with megatax_search_options_init, then change fields. */
typedef struct megatax_search_options {
  int backend;      /* MEGATAX_BACKEND_*; default AUTO */
  int threads;      /* worker threads; 0 (default) = all hardware threads; < 0 is refused */
  const char* simd; /* CPU code path: "auto" (default; also NULL), "scalar", "avx2",
                       "avx512", "neon"; a level this CPU lacks gives UNIMPLEMENTED.
                       Borrowed: only read during the call. */
  /* Since version 4. Backend CUDA: the GPUs that hold the vectors (SearchOptions::devices:
   * rows dealt to them in blocks, searched at once, merged: one GPU's results); n_devices
   * of them (0, the default: GPU 0). A GPU that does not exist gives INVALID_ARGUMENT.
   * Borrowed: only read during the call. */
  const int* devices; /* default NULL */
  int n_devices;      /* default 0 */
} megatax_search_options_t;

/* ---- errors ----------------------------------------------------------------------------- */

/* The message of the last failed call on this thread, or "" if the last call succeeded
 * (or none was made). Owned by the library; valid until the next megatax_* call on the
 * same thread (megatax_last_error and megatax_status_name do not change it). Never NULL. */
const char* megatax_last_error(void);

/* Stable lower-case name of a status code ("ok", "invalid_argument", ...); "unknown" for
 * other values. A static string; never NULL. */
const char* megatax_status_name(int status);

/* ---- options ---------------------------------------------------------------------------- */

/* Sets *opts to the defaults (AUTO backend, all threads, "auto" SIMD, GPU 0).
 * INVALID_ARGUMENT if opts is NULL. */
int megatax_search_options_init(megatax_search_options_t* opts);

/* ---- lifetime --------------------------------------------------------------------------- */

/* Creates an empty index of vectors of `dim` (>= 1) elements, compared by `metric`
 * (MEGATAX_METRIC_*), stored as `dtype` (MEGATAX_DTYPE_F32, F16 or BF16; other types are
 * rounded to it on add). On success *out owns the new index; on failure *out is NULL
 * (when out is not NULL). */
int megatax_index_create(int64_t dim, int metric, int dtype, megatax_index_t** out);

/* Frees the index and everything it holds. NULL is a no-op. */
void megatax_index_destroy(megatax_index_t* index);

/* ---- adding ----------------------------------------------------------------------------- */

/* Appends n (>= 0) vectors: x holds n * dim floats (row-major; may be NULL when n == 0).
 * They get ids ntotal .. ntotal + n - 1. A row holding NaN or Inf (or a value that
 * overflows the index dtype) is refused with INVALID_ARGUMENT naming the row, and then
 * nothing of this call is added. */
int megatax_index_add(megatax_index_t* index, int64_t n, const float* x);

/* As megatax_index_add, with x holding n * dim elements of `dtype` (MEGATAX_DTYPE_*):
 * F16/BF16 as uint16_t bits, U8 as bytes. */
int megatax_index_add_typed(megatax_index_t* index, int64_t n, const void* x, int dtype);

/* Removes every vector (ntotal becomes 0; dim, metric and dtype stay). */
int megatax_index_reset(megatax_index_t* index);

/* ---- searching -------------------------------------------------------------------------- */

/* Finds the k (>= 1) nearest stored vectors of each of the n (>= 0) queries.
 * q: n * dim floats (may be NULL when n == 0). distances, ids: caller-owned, n * k each
 * (may be NULL when n == 0); row i holds query i's results, nearest first (L2: ascending
 * squared distance; IP: descending inner product), ties to the smaller id. If k > ntotal,
 * the tail of each row is id -1 with distance +INFINITY (L2) or -INFINITY (IP).
 * opts: NULL for the defaults; borrowed for the call.
 * Errors: INVALID_ARGUMENT for a null pointer, k < 1, a query row holding NaN or Inf (named
 * in the message), bad options; UNIMPLEMENTED for the CUDA backend or a SIMD level this
 * CPU lacks. On failure the contents of distances and ids are unspecified. */
int megatax_index_search(const megatax_index_t* index, int64_t n, const float* q, int64_t k,
                         float* distances, int64_t* ids, const megatax_search_options_t* opts);

/* ---- accessors -------------------------------------------------------------------------- */

/* *out = number of stored vectors. INVALID_ARGUMENT if index or out is NULL. */
int megatax_index_ntotal(const megatax_index_t* index, int64_t* out);
/* *out = dimension of the vectors. INVALID_ARGUMENT if index or out is NULL. */
int megatax_index_dim(const megatax_index_t* index, int64_t* out);

/* ---- files ------------------------------------------------------------------------------ */

/* Writes the index to `path` atomically (a temporary file beside it, fsync, rename).
 * IO_ERROR naming the path and the OS's reason on failure; an existing file at `path` is
 * then left intact. */
int megatax_index_save(const megatax_index_t* index, const char* path);

/* Reads an index written by megatax_index_save. On success *out owns it; on failure *out
 * is NULL (when out is not NULL). NOT_FOUND if the file does not exist; DATA_LOSS naming
 * the path and what was wrong (bad magic, unsupported version, truncated). */
int megatax_index_load(const char* path, megatax_index_t** out);

/* ---- taxonomy (megatax/taxonomy.h) -------------------------------------------------------
 * A hierarchical k-means taxonomy over sharded vector files. Semantics, files and messages
 * are those of megatax::TaxonomyEngine. A taxonomy handle is used by one thread at a time. */

#define MEGATAX_TAXONOMY_METRIC_L2 0
#define MEGATAX_TAXONOMY_METRIC_IP 1
#define MEGATAX_TAXONOMY_METRIC_COSINE 2

typedef struct megatax_taxonomy megatax_taxonomy_t;

/* Fit settings. Fill with megatax_taxonomy_config_init, then change fields. */
typedef struct megatax_taxonomy_config {
  int n_levels;                 /* default 3 */
  const int64_t* branching;     /* n_branching values: one for all levels, or one per level;
                                   borrowed (read during megatax_taxonomy_create only) */
  int n_branching;              /* default: 1 value, 100 */
  int64_t dim;                  /* 0 (default) = from the data */
  const char* storage_uri;      /* required; borrowed */
  int metric;                   /* MEGATAX_TAXONOMY_METRIC_*; default L2 */
  int64_t sample_per_centroid;  /* default 256 */
  int max_iter;                 /* default 20 */
  double tol;                   /* default 1e-4 */
  uint64_t seed;                /* default 0 */
  int threads;                  /* 0 (default) = all hardware threads */
  int lloyd_passes;             /* default 0 */
  int64_t batch_rows;           /* default 65536 */

  /* Since version 2. Auto-balancing for skewed data (TaxonomyConfig::balance and the
   * fields after it): != 0 gives each parent a number of children that follows its share of
   * points, within [min_branching, max_branching], and splits last-level leaves over
   * max_leaf_size points (at most max_split_rounds extra passes). */
  int balance;                  /* default 0 (off: every split parent gets b_l children) */
  int64_t min_node_size;        /* parents with fewer points stay leaves; default 0 (= b_l) */
  int64_t max_leaf_size;        /* last-level cap; default 0 (= 1.5 N / prod b_l); needs balance */
  int64_t min_branching;        /* default 2 */
  int64_t max_branching;        /* default 0 (= 4 b_l) */
  int max_split_rounds;         /* default 4 */
  /* Since version 2. HNSW centroid search (TaxonomyConfig::hnsw_*): parents with more than
   * hnsw_threshold children get a graph over them at fit time (persisted beside the
   * centroids), searched by the assignment pass and predict instead of a scan; 0 = always
   * scan (exact). The defaults are TaxonomyConfig's (see megatax/taxonomy.h for how they were
   * chosen); hnsw_ef can be changed after load with megatax_taxonomy_set_search. */
  int64_t hnsw_threshold;
  int64_t hnsw_m;
  int64_t hnsw_ef_construction;
  int64_t hnsw_ef;
  /* Since version 3. Where the fit's kernels run (TaxonomyConfig::device, gpu, gpu_dtype):
   * "cpu" or "cuda" (one GPU of this process: gpu >= 0 picks it, -1 = the local rank's);
   * gpu_dtype is what the GPU multiplies in: "auto" (the data's dtype when f16/bf16, else
   * f32), "f32", "f16" or "bf16". Strings borrowed (read during megatax_taxonomy_create). */
  const char* device;           /* default "cpu" */
  int gpu;                      /* default -1 */
  const char* gpu_dtype;        /* default "auto" */
} megatax_taxonomy_config_t;

/* Sets *config to the defaults above (storage_uri NULL, branching NULL meaning 100). */
int megatax_taxonomy_config_init(megatax_taxonomy_config_t* config);

/* Creates an unfitted taxonomy; the config is validated (INVALID_ARGUMENT naming the field).
 * On failure *out is NULL. */
int megatax_taxonomy_create(const megatax_taxonomy_config_t* config, megatax_taxonomy_t** out);

/* Loads a complete taxonomy from storage_uri (NOT_FOUND / DATA_LOSS naming the file). */
int megatax_taxonomy_load(const char* storage_uri, megatax_taxonomy_t** out);

/* Frees the handle (the files stay). NULL is a no-op. */
void megatax_taxonomy_destroy(megatax_taxonomy_t* taxonomy);

/* Fits on the shards matching input_uri and writes per-shard outputs at output_uri
 * (<stem>.paths.npy, <stem>.ids.npy, <stem>.dist.npy). resume != 0 continues a killed fit.
 * ALREADY_EXISTS if a taxonomy exists at storage_uri and resume is 0. */
int megatax_taxonomy_fit(megatax_taxonomy_t* taxonomy, const char* input_uri,
                         const char* output_uri, int resume);

/* Paths of n vectors x (n * dim floats): paths receives n * levels int32 (-1 below a leaf),
 * distances (may be NULL) n floats. FAILED_PRECONDITION if not fitted. */
int megatax_taxonomy_predict(const megatax_taxonomy_t* taxonomy, int64_t n, const float* x,
                             int32_t* paths, float* distances);

/* Predicts every shard of input_uri, writing the same files as fit at output_uri. */
int megatax_taxonomy_predict_files(const megatax_taxonomy_t* taxonomy, const char* input_uri,
                                   const char* output_uri);

/* Number of levels and dimension of a fitted taxonomy (dim 0 before fit). */
int megatax_taxonomy_levels(const megatax_taxonomy_t* taxonomy, int* out);
int megatax_taxonomy_dim(const megatax_taxonomy_t* taxonomy, int64_t* out);

/* Since version 2. Centroid search of later predict calls on this handle
 * (TaxonomyEngine::set_search): exact != 0 scans every child, ignoring the HNSW graphs;
 * hnsw_ef > 0 sets the graphs' search breadth, 0 keeps the current one.
 * INVALID_ARGUMENT if hnsw_ef < 0. */
int megatax_taxonomy_set_search(megatax_taxonomy_t* taxonomy, int exact, int64_t hnsw_ef);

/* Since version 2. megatax_taxonomy_predict with a beam (TaxonomyEngine::predict(x, beam)):
 * keeps the `beam` (>= 1) best nodes per level and returns the path of the nearest leaf
 * met, never farther than greedy's; beam 1 is megatax_taxonomy_predict. beam_changed (may
 * be NULL) receives the number of rows whose path differs from the greedy one.
 * INVALID_ARGUMENT if beam < 1. */
int megatax_taxonomy_predict_beam(const megatax_taxonomy_t* taxonomy, int64_t n, const float* x,
                                  int beam, int32_t* paths, float* distances,
                                  int64_t* beam_changed);

/* Since version 2. megatax_taxonomy_predict_files with a beam (FitOptions::beam). rows and
 * beam_changed (either may be NULL) receive the rows written and those whose path differs
 * from the greedy one. INVALID_ARGUMENT if beam < 1. */
int megatax_taxonomy_predict_files_beam(const megatax_taxonomy_t* taxonomy, const char* input_uri,
                                        const char* output_uri, int beam, int64_t* rows,
                                        int64_t* beam_changed);

/* Since version 3. megatax_taxonomy_predict on a device (TaxonomyEngine::predict(x, options)):
 * device "cpu" is megatax_taxonomy_predict; "cuda" descends on a GPU (gpu -1 = the local
 * rank's; gpu_dtype NULL or "auto" = what the fit multiplied in when it ran on a GPU; every
 * child scanned, greedy), the rows getting the bits predict-to-files gives them. The handle
 * keeps the levels on that GPU between such calls until megatax_taxonomy_release_gpu or its
 * destruction. UNIMPLEMENTED in a build without CUDA, FAILED_PRECONDITION without a usable
 * GPU, INVALID_ARGUMENT for another device. */
int megatax_taxonomy_predict_device(const megatax_taxonomy_t* taxonomy, int64_t n, const float* x,
                                    const char* device, int gpu, const char* gpu_dtype,
                                    int32_t* paths, float* distances);

/* Since version 3. megatax_taxonomy_predict_files on a device (FitOptions::predict_device,
 * predict_gpu, predict_gpu_dtype; greedy). rows (may be NULL) receives the rows written. */
int megatax_taxonomy_predict_files_device(const megatax_taxonomy_t* taxonomy, const char* input_uri,
                                          const char* output_uri, const char* device, int gpu,
                                          const char* gpu_dtype, int64_t* rows);

/* Since version 3. Frees what megatax_taxonomy_predict_device keeps on a GPU. NULL: no-op. */
void megatax_taxonomy_release_gpu(megatax_taxonomy_t* taxonomy);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MEGATAX_MEGATAX_C_H_ */
