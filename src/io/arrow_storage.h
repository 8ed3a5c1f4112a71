// io/arrow_storage.h -- Storage over Apache Arrow C++'s filesystems: object stores (s3://,
// gs://, abfs://) and HDFS, from the pyarrow wheel (docs/formats.md, "Object stores").
//
// Paths inside an ArrowStorage are Arrow's: "bucket/key" for S3 and GCS ("s3://b/k" ->
// "b/k"), "container/path" for Azure, "/path" for HDFS. Wildcards are allowed in the last
// component of a glob, as everywhere ("s3://b/emb/part-*.npy").
//
// Semantics, per method of Storage:
//   read_range   one ranged GET (S3 "Range: bytes=a-b"), straight into the caller's buffer:
//                never a whole-object download, no HEAD first; a failed or short read is
//                then diagnosed with one HEAD (kNotFound / kDataLoss "short read").
//   write_atomic_gather  object stores: one whole object (PUT, or a multipart upload that is
//                completed only at the end): readers see the old object or the new one, and
//                a failed write is aborted, leaving the old one. HDFS: a temporary file beside
//                the target, then a rename. No directories are created on object stores
//                (their directories are prefixes).
//   write_atomic_stream  the same, each piece written to the output stream as it arrives
//                (S3: a part uploaded every 5 MiB while the producer goes on).
//   list / glob  listing of one "directory" level (S3: ListObjectsV2 with delimiter '/',
//                paged by the SDK, so any number of keys), glob_match on the names.
//   make_dirs    object stores: directory markers ("a/b/") as Arrow makes them; a missing
//                bucket is an error (buckets are never created or deleted).
//
// Configuration (S3), as the AWS CLI reads it: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY
// (+ AWS_SESSION_TOKEN), else the AWS SDK's default chain (profiles, SSO, web identity,
// instance metadata); AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1;
// AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, for S3-compatible servers
// ("http://127.0.0.1:9000": plain HTTP, path-style addressing). gs://, hdfs://, abfs://
// are configured by Arrow itself from the URI and the usual environment (Google ADC,
// HADOOP_HOME / CLASSPATH, AZURE_* variables).
//
// Retries (S3): each request that fails with an error the AWS SDK calls retryable
// (connection refused or reset, timeouts, HTTP 5xx, throttling) is retried up to
// ObjectStoreOptions::max_retries times with exponential backoff; then the call throws
// Error(kUnavailable), whose message names the object, the number of retries and the
// server's answer (Arrow's message, with the AWS error type and HTTP details). Other
// failures are not retried: kNotFound (no such key or bucket), kIoError (access denied, bad
// signature: "s3://b/k: ... AWS Error ACCESS_DENIED ..."), kDataLoss (short read).
//
// Thread-safety: safe for concurrent access (Arrow's filesystems are; no mutable state of
// ours besides an atomic retry counter).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "megatax/storage.h"

namespace megatax::io {

// Tunables of the object-store backend (a plain struct; the defaults suit real S3).
struct ObjectStoreOptions {
  int max_retries = 6;             // retries of one request after a retryable error (>= 0)
  int initial_backoff_ms = 200;    // delay before the first retry; doubled for each next one
  int max_backoff_ms = 10'000;     // cap of one delay
  double connect_timeout_s = 10;   // TCP connect timeout; <= 0: the SDK's default
  double request_timeout_s = 120;  // socket read timeout; <= 0: the SDK's default
};

class ArrowStorage final : public Storage {
 public:
  // Opens the filesystem of `uri` (s3://, gs://, gcs://, hdfs://, viewfs://, abfs://,
  // abfss://, az://) and stores in *path (if non-null) the path of the URI inside it.
  // Creating the filesystem contacts no server (S3: no region lookup; a region is always
  // set). Errors: kInvalidArgument (malformed URI or AWS_* variable, a bucket-less S3 URI),
  // kUnimplemented (a scheme this Arrow build lacks), kIoError (Arrow refused).
  static std::unique_ptr<ArrowStorage> open(std::string_view uri, std::string* path,
                                            const ObjectStoreOptions& options = {});
  ~ArrowStorage() override;

  std::string name() const override;  // "arrow(s3)", "arrow(gcs)", ...
  void read_range(const std::string& path, std::uint64_t offset, std::uint64_t length,
                  void* dst) const override;
  std::uint64_t size(const std::string& path) const override;
  bool exists(const std::string& path) const override;
  void write_atomic_gather(const std::string& path, std::span<const ByteSpan> pieces) override;
  void write_atomic_stream(const std::string& path, const PieceSource& next) override;
  std::vector<std::string> list(const std::string& dir) const override;
  std::vector<std::string> glob(const std::string& pattern) const override;
  bool remove(const std::string& path) override;
  void make_dirs(const std::string& path) override;

  // Retries made so far by this storage's requests (S3 only; 0 elsewhere). For tests and logs.
  std::int64_t retries() const noexcept;

  struct Impl;  // Arrow types live in the .cc only

 private:
  explicit ArrowStorage(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// open_storage_for_uri's route for the object-store schemes: ArrowStorage::open with
// default options, except that AWS_MAX_ATTEMPTS (tries per request, 1..100, as the AWS CLI
// reads it) sets max_retries = AWS_MAX_ATTEMPTS - 1. When built without Arrow:
// Error(kUnimplemented) "URI '<uri>': scheme s3:// needs the Arrow filesystem backend (not
// built)".
std::unique_ptr<Storage> open_arrow_storage(std::string_view uri, std::string* path);

// True when this build has the Arrow backend (Parquet and object stores).
bool arrow_backend_available() noexcept;

}  // namespace megatax::io
