"""mega_taxonomy: hierarchical k-means taxonomies of huge embedding sets, and exact kNN.

>>> from mega_taxonomy import TaxonomyEngine, IndexFlatL2
>>> engine = TaxonomyEngine(n_levels=3, branching_factor=100, dim=1024,
...                         storage_uri="file:///data/taxonomy/")
>>> engine.fit(input="file:///data/shards/*.npy", output="file:///data/paths/")
>>> paths = engine.predict("file:///data/new/*.npy")        # or a numpy array
>>> index = IndexFlatL2(128); index.add(xb); D, I = index.search(xq, k=10)

A thin layer over the C++ engine (the same code as the ``megatax`` command, which this
package also installs). See python/README.md for array rules (zero copy for float32 and
float16), errors and threading.
"""

from __future__ import annotations

from ._errors import MegataxError, MegataxNotFoundError, MegataxValueError
from ._core import IndexFlat, IndexFlatIP, IndexFlatL2, TaxonomyConfig
from ._taxonomy import TaxonomyEngine

try:
    from importlib.metadata import version as _version

    __version__ = _version("mega-taxonomy")
except Exception:  # not installed as a distribution (e.g. a build tree)
    __version__ = "0+unknown"

__all__ = [
    "TaxonomyEngine",
    "TaxonomyConfig",
    "IndexFlat",
    "IndexFlatL2",
    "IndexFlatIP",
    "MegataxError",
    "MegataxValueError",
    "MegataxNotFoundError",
    "__version__",
]
