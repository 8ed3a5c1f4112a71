// A fit on Parquet shards with an id column and Parquet outputs, against the same vectors in
// .npy: same model bytes, and outputs that carry the id column (checked by pyarrow).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "io/io_test_util.h"
#include "megatax/taxonomy.h"

namespace megatax {
namespace {

using testing_io::ScratchDir;

std::string bytes_of(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

int run_python(const std::string& script, const std::string& args) {
  return std::system(("python3 -c '" + script + "' " + args).c_str());
}

TEST(TaxonomyParquet, IdColumnAndParquetOutputsMatchTheNpyFit) {
  MEGATAX_SEEDED_RNG(rng);
  ScratchDir dir;
  // Two Parquet shards (list<float> embeddings, shuffled int64 ids, an extra text column that
  // must never be decoded) and the same vectors as .npy with the same stems.
  const std::string gen = R"PY(
import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq, os
root, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)
os.makedirs(root + "/pq"); os.makedirs(root + "/np")
centres = rng.normal(size=(12, 8)).astype(np.float32) * 5
for stem, n in (("a", 1500), ("b", 900)):
    x = (centres[rng.integers(0, 12, n)] + rng.normal(size=(n, 8))).astype(np.float32)
    ids = rng.choice(10**12, n, replace=False).astype(np.int64)
    emb = pa.array(list(x), type=pa.list_(pa.float32()))
    t = pa.table({"text": pa.array(["row %d" % i for i in range(n)]), "emb": emb, "doc_id": pa.array(ids)})
    pq.write_table(t, f"{root}/pq/{stem}.parquet", row_group_size=400)
    np.save(f"{root}/np/{stem}.npy", x)
    np.save(f"{root}/np/{stem}.ids.npy", ids)
)PY";
  ASSERT_EQ(run_python(gen, dir.path() + " " + std::to_string(rng_seed % 1000000)), 0)
      << "python3 with numpy and pyarrow is required (requirements.txt)";

  TaxonomyConfig c;
  c.n_levels = 2;
  c.branching = {4, 3};
  c.sample_per_centroid = 32;
  c.seed = 3;
  FitOptions quiet;
  quiet.progress = false;
  c.storage_uri = dir / "t-npy";
  TaxonomyEngine(c).fit(dir / "np/?.npy", dir / "out-npy", quiet);
  c.storage_uri = dir / "t-pq";
  c.column = "emb";
  c.id_column = "doc_id";
  c.output_format = "parquet";
  TaxonomyEngine(c).fit(dir / "pq/*.parquet", dir / "out-pq", quiet);

  for (const char* f : {"level-1/centroids.npy", "level-2/centroids.npy", "level-2/nodes.npy"})
    EXPECT_EQ(bytes_of(dir / (std::string("t-npy/") + f)), bytes_of(dir / (std::string("t-pq/") + f))) << f;
  const std::string check = R"PY(
import sys, numpy as np, pyarrow.parquet as pq
root = sys.argv[1]
for stem in ("a", "b"):
    t = pq.read_table(f"{root}/out-pq/{stem}.parquet")
    assert t.column_names == ["id", "path", "dist"], t.column_names
    ids = t.column("id").to_numpy()
    assert (ids == np.load(f"{root}/np/{stem}.ids.npy")).all(), "ids differ"
    paths = np.array(t.column("path").to_pylist(), dtype=np.int32)
    assert (paths == np.load(f"{root}/out-npy/{stem}.paths.npy")).all(), "paths differ"
    d = t.column("dist").to_numpy()
    assert (d.view(np.uint32) == np.load(f"{root}/out-npy/{stem}.dist.npy").view(np.uint32)).all(), "dist differs"
print("parquet outputs ok")
)PY";
  EXPECT_EQ(run_python(check, dir.path()), 0);
}

}  // namespace
}  // namespace megatax
