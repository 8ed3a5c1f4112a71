"""mega_taxonomy.TaxonomyEngine: hierarchical k-means over sharded vector files."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from . import _core

__all__ = ["TaxonomyEngine", "TaxonomyConfig"]

TaxonomyConfig = _core.TaxonomyConfig

PathLike = Union[str, "os.PathLike[str]"]


def _uri(value: PathLike, what: str) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise TypeError(f"{what}: expected a path or URI string, got {type(value).__name__}")


def _stderr_log(line: str) -> None:
    print(f"megatax: {line}", file=sys.stderr, flush=True)


class TaxonomyEngine:
    """A taxonomy: a tree of k-means centroids built top-down, level by level.

    ``fit`` streams the shards of a dataset (a URI glob of .npy/.fbin/.u8bin/.fvecs/.bvecs
    files) once per level with bounded memory, keeps the model and its resumable state at
    ``storage_uri`` and writes, per input shard, ``<stem>.paths.npy`` (int32 [n, L], -1
    below a leaf), ``<stem>.ids.npy`` (int64 [n]) and ``<stem>.dist.npy`` (float32 [n]).
    ``predict`` descends the tree for new vectors (a numpy array or a URI glob).

    Same data, config and seed give byte-identical centroids and paths (whatever the
    threads), and the same results as the ``megatax`` command.

    Thread-safety: one call at a time per engine (other threads wait); the GIL is
    released while the engine computes, so other Python threads keep running.
    """

    def __init__(
        self,
        *,
        n_levels: int = 3,
        branching_factor: Union[int, Sequence[int]] = 100,
        dim: int = 0,
        storage_uri: PathLike = "",
        metric: str = "l2",
        sample_per_centroid: int = 256,
        max_iter: int = 20,
        tol: float = 1e-4,
        seed: int = 0,
        threads: int = 0,
        lloyd_passes: int = 0,
        batch_rows: int = 65536,
        memory_budget_mb: int = 1024,
        simd: str = "auto",
        column: str = "embedding",
        id_column: str = "",
        skip_null: bool = False,
        output_format: str = "npy",
        balance: bool = False,
        min_node_size: int = 0,
        max_leaf_size: int = 0,
        min_branching: int = 2,
        max_branching: int = 0,
        max_split_rounds: int = 4,
        hnsw_threshold: int = 8192,
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 200,
        hnsw_ef: int = 32,
        device: str = "cpu",
        gpu_dtype: str = "auto",
        gpu: int = -1,
    ) -> None:
        """Creates an engine (nothing is read or written until ``fit``).

        Args:
            n_levels: levels of the tree, L >= 1.
            branching_factor: children per node: one int for every level, or a list of
                n_levels ints.
            dim: vector dimension; 0 takes it from the data at fit time.
            storage_uri: where the model and the fit state live (a path or file:// URI).
            metric: "l2" (squared Euclidean), "ip" (inner product) or "cosine".
            sample_per_centroid: training sample per node = this x branching.
            max_iter: Lloyd iterations per node (on its sample).
            tol: relative inertia change that stops Lloyd.
            seed: random seed.
            threads: worker threads, 0 = all hardware threads (results do not change).
            lloyd_passes: extra full-data Lloyd passes per level.
            batch_rows: rows read per batch.
            memory_budget_mb: training samples of one group of node problems (the CUDA
                backend holds two groups: one training, the next being read).
            simd: CPU kernel path: "auto", "scalar", "avx2", "avx512" or "neon".
            column, id_column, skip_null: Parquet inputs: the embedding column, an integer
                id column carried to the outputs, skip (count) null embeddings.
            output_format: "npy" (<stem>.paths/ids/dist.npy) or "parquet" (<stem>.parquet).
            balance: children per node follow its share of points (within
                [min_branching, max_branching]); parents under min_node_size points stay
                leaves; last-level leaves over max_leaf_size are split (max_split_rounds).
            hnsw_threshold: parents with more children are searched through an HNSW graph
                (hnsw_m, hnsw_ef_construction, hnsw_ef); 0 = always scan (exact).
            device: "cpu", or "cuda" (a build with the CUDA backend; this wheel is CPU-only
                unless built with -DMEGATAX_CUDA=ON); gpu_dtype: "auto", "f32", "f16" or
                "bf16"; gpu: which GPU (-1 = the MPI local rank's).

        Raises:
            MegataxValueError: a field is invalid (the message names it).
            TypeError: a field has the wrong type.
        """
        config = _core.TaxonomyConfig()
        config.n_levels = n_levels
        if isinstance(branching_factor, (bool, np.bool_)):
            raise TypeError("branching_factor: expected an int or a list of ints, got bool")
        if isinstance(branching_factor, (int, np.integer)):
            config.branching_factor = [int(branching_factor)]
        else:
            config.branching_factor = [int(b) for b in branching_factor]
        config.dim = dim
        config.storage_uri = _uri(storage_uri, "storage_uri")
        config.metric = metric
        config.sample_per_centroid = sample_per_centroid
        config.max_iter = max_iter
        config.tol = tol
        config.seed = seed
        config.threads = threads
        config.lloyd_passes = lloyd_passes
        config.batch_rows = batch_rows
        config.memory_budget_mb = memory_budget_mb
        config.simd = simd
        config.column = column
        config.id_column = id_column
        config.skip_null = skip_null
        config.output_format = output_format
        config.balance = balance
        config.min_node_size = min_node_size
        config.max_leaf_size = max_leaf_size
        config.min_branching = min_branching
        config.max_branching = max_branching
        config.max_split_rounds = max_split_rounds
        config.hnsw_threshold = hnsw_threshold
        config.hnsw_m = hnsw_m
        config.hnsw_ef_construction = hnsw_ef_construction
        config.hnsw_ef = hnsw_ef
        config.device = device
        config.gpu_dtype = gpu_dtype
        config.gpu = gpu
        self._engine = _core._TaxonomyEngine(config)

    @staticmethod
    def load(storage_uri: PathLike) -> "TaxonomyEngine":
        """Loads a complete taxonomy written by ``fit`` at ``storage_uri``.

        Raises:
            MegataxNotFoundError: there is no taxonomy there.
            MegataxError: the taxonomy is damaged (code "data_loss") or unreadable.
        """
        engine = TaxonomyEngine.__new__(TaxonomyEngine)
        engine._engine = _core._TaxonomyEngine.load(_uri(storage_uri, "storage_uri"))
        return engine

    def fit(
        self,
        input: PathLike,
        output: PathLike,
        *,
        resume: bool = False,
        progress: bool = True,
        log: Optional[Callable[[str], Any]] = None,
        executor: str = "auto",
        workers: Optional[int] = None,
        ray_options: Optional[Mapping[str, Any]] = None,
    ) -> dict:
        """Fits the taxonomy on every shard matching ``input`` (a glob, sorted by name).

        Writes the model at ``storage_uri`` and ``<stem>.paths.npy``, ``<stem>.ids.npy``,
        ``<stem>.dist.npy`` per shard at ``output``. Refuses to overwrite an existing
        taxonomy unless ``resume=True``, which continues a fit that was stopped (killed,
        Ctrl-C, an error) from its last committed level and ends with the same tree.

        Args:
            input: URI glob of the input shards, e.g. "file:///data/shards/*.npy".
            output: where the per-shard outputs go (a folder path or URI).
            resume: continue the fit found at storage_uri.
            progress: progress bars on stderr when it is a terminal, and one line per
                level step ("megatax: level 1/3: training") through ``log``.
            log: called with each level-step line; default: print to sys.stderr when
                ``progress`` is true.
            executor: where the work runs: "local" (threads of this process), "mpi"
                (one process per rank under mpirun/srun; needs an engine built with MPI,
                which the wheel is not), "auto" (mpi when started by mpirun with
                several ranks, else local) or "ray" (``workers`` Ray actors, on the Ray
                instance of this process or a local one: ``mega_taxonomy.ray.fit_on_ray``;
                needs ``pip install ray``). The tree is the same whatever the executor.
            workers: executor="ray" only: the number of worker actors (default 2).
            ray_options: executor="ray" only: more keyword arguments of
                ``mega_taxonomy.ray.fit_on_ray`` (num_gpus_per_worker, num_cpus_per_worker,
                max_attempts, address, env, start_timeout).

        Returns:
            The fit report: {"points", "resumed_from_level", "seconds",
            "points_levels_per_second", "levels": [{"level", "nodes", "split_parents",
            "points", "inertia", "seconds", "train_seconds", "assign_seconds"}, ...]};
            with executor="ray" also "executor", "attempts", "workers" and "log" (see
            ``fit_on_ray``).

        Raises:
            KeyboardInterrupt: Ctrl-C. It is noticed at the next level step (start of a
                level's training, start of its assignment pass, end of the level); the
                taxonomy then holds its last committed level and ``resume=True``
                continues it.
            MegataxError: the engine failed (message and ``.code`` from the engine);
                nothing half-written is left behind.
        """
        if executor == "ray":
            from .ray import fit_on_ray  # imports Ray: only when asked for

            options = dict(ray_options or {})
            report = fit_on_ray(self._engine.config, _uri(input, "input"), _uri(output, "output"),
                                num_workers=2 if workers is None else workers, resume=resume,
                                progress=progress, log=log, **options)
            # The workers fitted it: this engine now holds the model they committed.
            fitted = _core._TaxonomyEngine.load(self._engine.config.storage_uri)
            fitted.set_threads(self._engine.config.threads)
            self._engine = fitted
            return report
        if workers is not None or ray_options is not None:
            raise ValueError("fit: workers and ray_options are for executor='ray' (MPI ranks "
                             "come from mpirun)")
        if log is None and progress:
            log = _stderr_log
        return self._engine.fit(
            _uri(input, "input"), _uri(output, "output"), resume, progress, log, executor
        )

    def predict(
        self,
        x: Union[np.ndarray, PathLike],
        output: Optional[PathLike] = None,
        *,
        return_distances: bool = False,
        progress: bool = True,
        beam: int = 1,
        device: str = "cpu",
        gpu: int = -1,
        gpu_dtype: str = "auto",
    ) -> Any:
        """Descends the taxonomy for new vectors.

        Args:
            x: a 2-D array (n, dim) -- float32 and float16 are read without a copy, other
                real dtypes are copied once to float32 -- or a URI glob of shards.
            output: only with a URI glob: write ``<stem>.paths.npy``, ``<stem>.ids.npy``,
                ``<stem>.dist.npy`` per shard there (like ``fit``) and return None. Without
                it the paths of every row of the glob are returned in one array (files
                are written to a temporary folder and read back).
            return_distances: also return the float32 distance of each vector to its
                deepest centroid.
            progress: progress bar on stderr (URI input, when stderr is a terminal).
            beam: keep the ``beam`` best nodes per level and return the nearest leaf found
                (1 = greedy descent; a larger beam never returns a farther leaf).
            device: ``"cpu"`` or ``"cuda"`` (one GPU, ``gpu`` -1 = the local rank's,
                multiplying in ``gpu_dtype`` as for fit, ``"auto"`` being what the fit
                multiplied in when it ran on a GPU; every child scanned, greedy: beam 1). An array and the
                same rows in a file get the same paths and distances. For arrays the engine
                keeps the levels on that GPU between calls (``release_gpu()`` frees them).

        Returns:
            paths, int32 (n, n_levels), -1 below a leaf -- or (paths, distances) with
            return_distances -- or None when ``output`` is given.
        """
        if isinstance(x, (str, os.PathLike)):
            uri = os.fspath(x)
            if output is not None:
                self._engine.predict_uri(uri, _uri(output, "output"), progress, beam, device, gpu, gpu_dtype)
                return None
            with tempfile.TemporaryDirectory(prefix="megatax-predict-") as tmp:
                self._engine.predict_uri(uri, tmp, progress, beam, device, gpu, gpu_dtype)
                paths, dist = _read_outputs(tmp, self.n_levels)
        else:
            if output is not None:
                raise ValueError("predict: output is only for a URI input; an array's paths are returned")
            paths, dist = self._engine.predict_array(x, beam, device, gpu, gpu_dtype)
        return (paths, dist) if return_distances else paths

    def release_gpu(self) -> None:
        """Frees what ``predict(array, device="cuda")`` keeps on the GPU between calls
        (the levels' centroids, a page-locked buffer); the next such call loads them again."""
        self._engine.release_gpu()

    def info(self) -> dict:
        """The manifest (taxonomy.json) as a dict: format, config, dim, dataset, levels
        (nodes, points, inertia per level), status. Empty before fit/load."""
        return json.loads(self._engine.manifest_json()) or {}

    def centroids(self, level: int) -> np.ndarray:
        """Centroids of level ``level`` (1-based) as a float32 (nodes, dim) copy."""
        return self._engine.centroids(level)

    def nodes_per_level(self) -> list:
        """Number of nodes at each level (index 0 = level 1)."""
        return self._engine.nodes_per_level()

    def set_threads(self, threads: int) -> None:
        """Threads for later fit/predict calls (0 = all); results do not change."""
        self._engine.set_threads(threads)

    @property
    def config(self) -> "TaxonomyConfig":
        """A copy of the engine's settings."""
        return self._engine.config

    @property
    def n_levels(self) -> int:
        """Levels of the tree (L)."""
        return self._engine.config.n_levels

    @property
    def dim(self) -> int:
        """Vector dimension (0 until fitted or loaded, unless given)."""
        return self._engine.dim

    @property
    def fitted(self) -> bool:
        """True once fit() completed or load() read a complete taxonomy."""
        return self._engine.fitted

    def __repr__(self) -> str:
        c = self._engine.config
        return (
            f"TaxonomyEngine(n_levels={c.n_levels}, branching_factor={c.branching_factor}, "
            f"dim={self._engine.dim}, storage_uri={c.storage_uri!r}, metric={c.metric!r}, "
            f"fitted={self._engine.fitted})"
        )


def _read_outputs(folder: str, n_levels: int):
    """Reads predict's per-shard outputs back into one (paths, distances) pair in
    global-id order."""
    stems = sorted(f[: -len(".ids.npy")] for f in os.listdir(folder) if f.endswith(".ids.npy"))
    ids = [np.load(os.path.join(folder, s + ".ids.npy")) for s in stems]
    total = sum(len(i) for i in ids)
    paths = np.empty((total, n_levels), dtype=np.int32)
    dist = np.empty(total, dtype=np.float32)
    base = min((int(i.min()) for i in ids if len(i)), default=0)
    for stem, i in zip(stems, ids):
        paths[i - base] = np.load(os.path.join(folder, stem + ".paths.npy"))
        dist[i - base] = np.load(os.path.join(folder, stem + ".dist.npy"))
    return paths, dist
