// tests/taxonomy/taxonomy_test_util.h -- helpers shared by the taxonomy tests: the bytes of a
// model or output folder, the paths of every output shard, and quiet fit options.
// Header-only; test code only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "io/npy_array.h"
#include "megatax/storage.h"
#include "megatax/taxonomy.h"

namespace megatax::testing_taxonomy {

inline std::vector<char> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// All files under dir (relative name -> bytes), recursively; the manifest (which records
// timings) is left out when skip_manifest.
inline std::map<std::string, std::vector<char>> tree_bytes(const std::string& dir, bool skip_manifest) {
  std::map<std::string, std::vector<char>> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = std::filesystem::relative(e.path(), dir).string();
    if (skip_manifest && rel == "taxonomy.json") continue;
    out[rel] = file_bytes(e.path().string());
  }
  return out;
}

// Paths of all shards of an .npy output folder, concatenated in shard order (int32 [n, L]).
inline std::vector<std::int32_t> all_paths(const std::string& out_dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(out_dir))
    if (e.path().string().ends_with(".paths.npy")) names.push_back(e.path().string());
  std::sort(names.begin(), names.end());
  auto st = open_storage_for_uri("/");
  std::vector<std::int32_t> all;
  for (const auto& n : names) {
    std::vector<std::int64_t> shape;
    auto p = io::read_npy_array<std::int32_t>(*st, n, &shape);
    all.insert(all.end(), p.begin(), p.end());
  }
  return all;
}

inline FitOptions quiet() {
  FitOptions o;
  o.progress = false;
  return o;
}

}  // namespace megatax::testing_taxonomy
