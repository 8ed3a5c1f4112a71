"""Type stubs of mega_taxonomy._core, the compiled part of mega_taxonomy (pybind11).

Array arguments: a 2-D array (n, d) or anything numpy.asarray accepts. float32 and float16
arrays whose rows are unit-stride are read in place (no copy, any row step); other real
dtypes (float64, integers) and other layouts are copied once to C-contiguous float32.
Non-numeric dtypes raise TypeError; an ndim other than 2 raises MegataxValueError.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

_PathLike = Union[str, os.PathLike[str]]

class IndexFlat:
    """Exact (brute-force) k-nearest-neighbour index over vectors of dimension d.

    Vectors are copied into the index and stored as `dtype` ('f32', 'f16' or 'bf16');
    ids are insertion positions 0..ntotal-1. Results per query are sorted nearest first,
    ties to the smaller id; if k > ntotal the tail has id -1 and distance +inf (L2) or
    -inf (IP). search() may run from several threads at once (the GIL is released);
    add() and reset() run alone.
    """

    def __init__(self, d: int, metric: str = "l2", dtype: str = "f32") -> None:
        """An empty index: d >= 1, metric 'l2' or 'ip', dtype 'f32', 'f16' or 'bf16'."""
    def add(self, x: npt.ArrayLike) -> None:
        """Appends the rows of x (n, d). A NaN/Inf row raises MegataxValueError and
        nothing is added. Releases the GIL."""
    def search(
        self,
        xq: npt.ArrayLike,
        k: int,
        threads: int = 0,
        *,
        backend: str = "auto",
        devices: Optional[Sequence[int]] = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """(D, I): float32 (nq, k) distances and int64 (nq, k) ids of the k nearest
        stored vectors of each query row. threads: 0 = all hardware threads. backend:
        'auto'/'cpu' (CPU kernels) or 'cuda' (a CUDA build: the vectors stay on the GPU
        between searches); devices: with 'cuda', the GPUs holding the vectors (rows dealt
        to them, searched at once, merged: one GPU's results); default [0]. Releases
        the GIL."""
    def reset(self) -> None:
        """Removes every vector."""
    def reconstruct(self, i: int) -> npt.NDArray[np.float32]:
        """Stored vector i (0 <= i < ntotal) as float32 (d,)."""
    def save(self, path: _PathLike) -> None:
        """Writes the index to path atomically (format MTXFLAT1)."""
    @staticmethod
    def load(path: _PathLike) -> IndexFlat:
        """Reads an index written by save(): an IndexFlatL2 or IndexFlatIP per the file."""
    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
    @property
    def d(self) -> int:
        """Vector dimension."""
    @property
    def dtype(self) -> str:
        """Storage type: 'f32', 'f16' or 'bf16'."""
    @property
    def metric(self) -> str:
        """'l2' or 'ip'."""
    def __len__(self) -> int: ...

class IndexFlatL2(IndexFlat):
    """IndexFlat with squared L2 distances (smaller is nearer)."""

    def __init__(self, d: int, dtype: str = "f32") -> None: ...

class IndexFlatIP(IndexFlat):
    """IndexFlat with inner products (larger is nearer)."""

    def __init__(self, d: int, dtype: str = "f32") -> None: ...

class TaxonomyConfig:
    """Settings of a taxonomy (megatax::TaxonomyConfig); one attribute per field."""

    n_levels: int
    branching_factor: list[int]
    dim: int
    storage_uri: str
    metric: str
    sample_per_centroid: int
    max_iter: int
    tol: float
    seed: int
    threads: int
    lloyd_passes: int
    batch_rows: int
    memory_budget_mb: int
    simd: str
    column: str
    id_column: str
    skip_null: bool
    output_format: str
    balance: bool
    min_node_size: int
    max_leaf_size: int
    min_branching: int
    max_branching: int
    max_split_rounds: int
    hnsw_threshold: int
    hnsw_m: int
    hnsw_ef_construction: int
    hnsw_ef: int
    device: str
    gpu_dtype: str
    gpu: int
    def __init__(self) -> None: ...
    def validate(self) -> None:
        """Raises MegataxValueError naming the field when the config is unusable."""

class _TaxonomyEngine:
    """megatax::TaxonomyEngine; use mega_taxonomy.TaxonomyEngine instead."""

    def __init__(self, config: TaxonomyConfig) -> None: ...
    @staticmethod
    def load(storage_uri: str) -> _TaxonomyEngine: ...
    def fit(
        self,
        input_uri: str,
        output_uri: str,
        resume: bool = False,
        progress: bool = True,
        log: Optional[Callable[[str], Any]] = None,
        executor: str = "auto",
    ) -> dict[str, Any]: ...
    def fit_with_callbacks(
        self,
        input_uri: str,
        output_uri: str,
        resume: bool,
        rank: int,
        workers: int,
        next_shard: Callable[[int, int], int],
        allgather: Callable[[bytes], list[bytes]],
        progress: bool = False,
        log: Optional[Callable[[str], Any]] = None,
    ) -> dict[str, Any]:
        """This worker's part of an SPMD fit (mega_taxonomy.ray): every worker calls it with
        the same arguments but its own rank. next_shard(round, n_shards) returns the next
        unclaimed shard of pass `round` (one fetch-and-add shared by the workers) or -1;
        allgather(payload) returns every worker's payload, by rank. Both are called in the
        fit's thread with the GIL held; an exception they raise stops this worker's fit and
        is raised from here (the caller must unblock the other workers)."""
    def predict_array(
        self,
        x: npt.ArrayLike,
        beam: int = 1,
        device: str = "cpu",
        gpu: int = -1,
        gpu_dtype: str = "auto",
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]: ...
    def release_gpu(self) -> None: ...
    def predict_uri(
        self,
        input_uri: str,
        output_uri: str,
        progress: bool = True,
        beam: int = 1,
        device: str = "cpu",
        gpu: int = -1,
        gpu_dtype: str = "auto",
    ) -> None: ...
    def set_threads(self, threads: int) -> None: ...
    @property
    def config(self) -> TaxonomyConfig: ...
    @property
    def dim(self) -> int: ...
    @property
    def fitted(self) -> bool: ...
    def nodes_per_level(self) -> list[int]: ...
    def centroids(self, level: int) -> npt.NDArray[np.float32]: ...
    def manifest_json(self) -> str: ...

def _matrix_arg_info(x: Any) -> dict[str, Any]:
    """Testing aid: how an array argument is read (copied, dtype, rows, dim, stride, data)."""
