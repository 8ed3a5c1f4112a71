"""mega_taxonomy.ray: fit a taxonomy on a Ray cluster (or on this machine through Ray).

>>> from mega_taxonomy.ray import fit_on_ray
>>> report = fit_on_ray(dict(n_levels=3, branching_factor=100,
...                          storage_uri="file:///shared/taxonomy/"),
...                     input="file:///shared/shards/*.npy", output="file:///shared/paths/",
...                     num_workers=8, num_gpus_per_worker=1)

How it works (docs/ray.md has the whole story):

* The driver (the process calling ``fit_on_ray``) starts one **coordinator** actor and
  ``num_workers`` **worker** actors. Each worker holds a C++ engine of this package and runs
  the same SPMD fit as an MPI rank (``TaxonomyEngine::fit_with`` on a
  ``dist::CallbackExecutor``): worker 0 also drives -- the level loop, the commits and the
  manifest -- exactly as rank 0 does under ``mpirun``.
* Shards are dispatched dynamically: at every pass each worker asks the coordinator for the
  next unclaimed shard index (a fetch-and-add per pass) when it is free, so a slow worker
  takes fewer shards. The driver/worker messages of ``src/dist`` (samples, centroids, node
  totals) travel as bytes through Ray (actor calls; large ones through the object store)
  as all-gathers on the coordinator. An executor only moves work and bytes, so the tree is
  the same, bit for bit, as the single-process and MPI fits.
* Fault tolerance: a level is the unit of retry. When a worker actor dies (its node fails,
  it is killed) or fails with a transient error (code ``"unavailable"``), the driver aborts
  the attempt (the other workers' collectives raise, their fits unwind; nothing past the
  last committed level is written, the manifest is written last), waits for Ray to restart
  the dead actor (``max_restarts``) and runs a new attempt with ``resume=True``: it
  continues from the last committed level and ends with the identical tree. Errors of the
  input or the call (a shard unreadable from a worker, a bad dimension, an existing
  taxonomy: codes such as ``"not_found"``, ``"data_loss"``, ``"invalid_argument"``) are not
  retried: they are raised at once, naming the file.
* A driver that is killed takes its actors with it (they are owned by it); run
  ``fit_on_ray(..., resume=True)`` (or ``python -m mega_taxonomy.ray ... --resume``) to
  continue from storage.

Ray is imported only when a function of this module is called: ``import mega_taxonomy``
works without it (``pip install 'ray==2.60.0'``, the version tested).

Thread-safety: ``fit_on_ray`` may be called from one thread at a time per process.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import logging
import os
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from . import _core
from ._errors import MegataxError, error_class

__all__ = ["fit_on_ray", "main"]

# Error codes of the engine that retrying the same fit may cure (the rest name a file, a
# field or a state that must be fixed first: they are raised at once).
_RETRYABLE_CODES = frozenset({"unavailable"})
# Test hooks of the C++ fit that kill or stall a worker; a restarted worker actor drops them
# so that it does not fail again (src/taxonomy/fit.cc, src/dist/callback_executor.h).
_FIRST_LIFE_ONLY_ENV = ("MEGATAX_TEST_CRASH_RANK", "MEGATAX_TEST_CRASH_LEVEL")
_RAY_VERSION_TESTED = "2.60.0"


def _stderr_log(line: str) -> None:
    print(f"megatax: {line}", file=sys.stderr, flush=True)


def _import_ray(local: bool):
    """Imports Ray. A local instance must listen on 127.0.0.1 only and report no usage
    statistics; both switches are read when Ray is imported, so they are set (unless the
    environment already chooses) only if this call is the one importing it."""
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if local:
            # Ray's switch for a one-machine instance: node address 127.0.0.1 (loopback).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"mega_taxonomy.ray needs Ray: pip install 'ray=={_RAY_VERSION_TESTED}'"
        ) from e
    return ray


# ---- The config travels to the workers as a plain dict of its fields --------------------


def _config_fields(config: "_core.TaxonomyConfig") -> Dict[str, Any]:
    """Every read-write field of a TaxonomyConfig (the binding's properties), by name."""
    fields = {}
    for name, member in inspect.getmembers(type(config)):
        if not name.startswith("_") and isinstance(member, property) and member.fset is not None:
            fields[name] = getattr(config, name)
    return fields


def _make_config(fields: Mapping[str, Any]) -> "_core.TaxonomyConfig":
    config = _core.TaxonomyConfig()
    for name, value in fields.items():
        setattr(config, name, value)
    config.validate()
    return config


def _as_config(config: Any) -> "_core.TaxonomyConfig":
    if isinstance(config, _core.TaxonomyConfig):
        return _make_config(_config_fields(config))  # a validated copy
    if isinstance(config, Mapping):
        from ._taxonomy import TaxonomyEngine  # the keyword checks and conversions of fit()

        return TaxonomyEngine(**config).config
    if hasattr(config, "config") and isinstance(config.config, _core.TaxonomyConfig):
        return config.config  # a TaxonomyEngine
    raise TypeError(
        "config: expected a TaxonomyConfig, a dict of TaxonomyEngine keyword arguments or a "
        f"TaxonomyEngine, got {type(config).__name__}"
    )


def _absolute(uri: str) -> str:
    """A plain relative path made absolute (workers do not share the driver's cwd); URIs
    (scheme://...) and absolute paths are kept."""
    if "://" in uri or os.path.isabs(uri) or not uri:
        return uri
    return os.path.abspath(uri)


# ---- Actors ---------------------------------------------------------------------------


class _Aborted(Exception):
    """Raised inside a worker whose attempt the coordinator aborted (another worker failed
    or died): its fit unwinds without committing anything."""


class _Coordinator:
    """The meeting point of the workers of one fit (an async Ray actor, no CPU).

    allgather: the k-th call of every worker of an attempt (epoch) meets the others' k-th,
    and each gets the list of all payloads by rank. next_shard: one fetch-and-add counter per
    pass (round). abort: wakes every worker waiting in a collective of that epoch and fails
    its later calls; they get the reason (a str) instead of a result. log/drain_log: workers'
    log lines, forwarded to the driver as they come. stats: what this attempt moved. Runs on
    one event loop: no locks.
    """

    def __init__(self, workers: int) -> None:
        import asyncio

        self._asyncio = asyncio
        self._workers = workers
        self._epoch = -1
        self._aborted: Optional[str] = "no attempt started"
        self._slots: Dict[int, dict] = {}
        self._counters: Dict[int, int] = {}
        self._lines: List[tuple] = []
        self._stats: Dict[str, int] = {}

    def begin(self, epoch: int) -> None:
        for slot in self._slots.values():
            slot["event"].set()  # nobody may still wait on an old epoch
        self._epoch, self._aborted = epoch, None
        self._slots, self._counters = {}, {}
        self._stats = {"allgathers": 0, "allgather_bytes": 0, "shard_claims": 0}

    def abort(self, epoch: int, reason: str) -> None:
        if epoch != self._epoch or self._aborted is not None:
            return
        self._aborted = reason
        for slot in self._slots.values():
            slot["event"].set()

    def _refusal(self, epoch: int) -> Optional[str]:
        if epoch != self._epoch:
            return f"attempt {epoch} is over"
        if self._aborted is not None:
            return self._aborted
        return None

    async def allgather(self, epoch: int, seq: int, rank: int, payload: bytes):
        refusal = self._refusal(epoch)
        if refusal is not None:
            return refusal
        slot = self._slots.get(seq)
        if slot is None:
            slot = {"parts": [None] * self._workers, "arrived": 0, "taken": 0,
                    "event": self._asyncio.Event()}
            self._slots[seq] = slot
            self._stats["allgathers"] += 1
        if slot["parts"][rank] is not None:
            return f"worker {rank} joined collective {seq} twice"
        slot["parts"][rank] = payload
        slot["arrived"] += 1
        self._stats["allgather_bytes"] += len(payload)
        if slot["arrived"] == self._workers:
            slot["event"].set()
        await slot["event"].wait()
        refusal = self._refusal(epoch)
        if refusal is not None:
            return refusal
        slot["taken"] += 1
        if slot["taken"] == self._workers:
            del self._slots[seq]
        return slot["parts"]

    def next_shard(self, epoch: int, round_: int, n_shards: int) -> Union[int, str]:
        refusal = self._refusal(epoch)
        if refusal is not None:
            return refusal
        self._stats["shard_claims"] += 1
        claimed = self._counters.get(round_, 0)
        if claimed >= n_shards:
            return -1
        self._counters[round_] = claimed + 1
        return claimed

    def log(self, epoch: int, rank: int, index: int, line: str) -> None:
        self._lines.append((epoch, rank, index, line))

    def drain_log(self) -> List[tuple]:
        lines, self._lines = self._lines, []
        return lines

    def stats(self) -> Dict[str, int]:
        return dict(self._stats)


class _Worker:
    """One worker of the fit (a Ray actor restarted by Ray when it dies): a C++ engine of
    this package on a CallbackExecutor whose collectives go through the coordinator."""

    def __init__(self, config_fields: Dict[str, Any], threads: int) -> None:
        import ray

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        if self._restarted:
            for name in _FIRST_LIFE_ONLY_ENV:
                os.environ.pop(name, None)
        fields = dict(config_fields)
        if fields.get("threads", 0) == 0:
            fields["threads"] = threads
        self._config = _make_config(fields)
        self._info = {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                      "restarted": self._restarted}

    def info(self) -> dict:
        return dict(self._info)

    def fit(self, coordinator, epoch: int, rank: int, workers: int, input_uri: str,
            output_uri: str, resume: bool) -> dict:
        import ray

        seq = itertools.count()
        lines: List[str] = []

        def allgather(payload: bytes) -> list:
            parts = ray.get(coordinator.allgather.remote(epoch, next(seq), rank, payload))
            if isinstance(parts, str):
                raise _Aborted(parts)
            return parts

        def next_shard(round_: int, n_shards: int) -> int:
            shard = ray.get(coordinator.next_shard.remote(epoch, round_, n_shards))
            if isinstance(shard, str):
                raise _Aborted(shard)
            return shard

        def log(line: str) -> None:
            coordinator.log.remote(epoch, rank, len(lines), line)  # numbered: calls may overtake
            lines.append(line)

        result = dict(self._info, rank=rank, log=lines)
        try:
            engine = _core._TaxonomyEngine(self._config)
            result["report"] = engine.fit_with_callbacks(
                input_uri, output_uri, resume, rank, workers, next_shard, allgather, False, log)
            result["status"] = "ok"
        except _Aborted as e:
            result.update(status="aborted", message=str(e))
        except MegataxError as e:
            result.update(status="error", code=e.code, message=str(e))
        except Exception as e:  # a bug, or Ray failing under us: not retried
            result.update(status="error", code="internal", message=f"{type(e).__name__}: {e}")
        if result["status"] == "error":
            # Unblock the others now (the driver would too, once it sees this result).
            coordinator.abort.remote(epoch, f"worker {rank} failed: {result['message']}")
        return result


# ---- The driver -----------------------------------------------------------------------


class _Driver:
    """One fit_on_ray call: the actors, the attempts, the log."""

    def __init__(self, ray, config, input_uri, output_uri, *, num_workers, num_cpus_per_worker,
                 num_gpus_per_worker, max_attempts, env, log, start_timeout):
        self.ray = ray
        self.config = config
        self.input_uri, self.output_uri = input_uri, output_uri
        self.num_workers = num_workers
        self.num_cpus_per_worker = num_cpus_per_worker
        self.num_gpus_per_worker = num_gpus_per_worker
        self.max_attempts = max_attempts
        self.env = dict(env or {})
        self.log = log
        self.start_timeout = start_timeout
        self.lines: List[str] = []
        self.worker_lines: List[List[str]] = [[] for _ in range(num_workers)]
        self.held: Dict[tuple, str] = {}  # (epoch, rank, index) -> a line that came early
        self.next_line: Dict[tuple, int] = {}  # (epoch, rank) -> index of its next line
        self.infos: List[dict] = []
        self.restarts = [0] * num_workers
        self.coordinator = None
        self.workers: list = []
        self.transport: Dict[str, int] = {}

    def say(self, line: str) -> None:
        self.lines.append(line)
        if self.log is not None:
            self.log(line)

    def worker_prefix(self, rank: int) -> str:
        info = self.infos[rank]
        return f"ray worker {rank}/{self.num_workers} (pid {info['pid']} on {info['node']})"

    def forward(self, entries) -> None:
        """Worker log lines as they come, in each worker's order (the coordinator's calls
        may overtake one another): level steps of worker 0 as they are, per-worker lines
        ("rank r/R: ...") with the worker's pid and node."""
        for epoch, rank, index, line in entries:  # in the order they reached the coordinator
            if index < self.next_line.get((epoch, rank), 0):
                continue  # a late copy of a line already given out
            self.held[(epoch, rank, index)] = line
            while (epoch, rank, self.next_line.get((epoch, rank), 0)) in self.held:
                self.emit(epoch, rank, self.held.pop((epoch, rank, self.next_line.get((epoch, rank), 0))))

    def emit(self, epoch: int, rank: int, line: str) -> None:
        self.next_line[(epoch, rank)] = self.next_line.get((epoch, rank), 0) + 1
        self.worker_lines[rank].append(line)
        prefix = f"rank {rank}/{self.num_workers}: "
        if line.startswith(prefix):
            self.say(f"{self.worker_prefix(rank)}: {line[len(prefix):]}")
        else:
            self.say(line)

    def finish_log(self, epoch: int, results: List[dict]) -> None:
        """End of an attempt: every line of a worker that returned (its result has them all,
        some may still be on their way to the coordinator), and what came of the others."""
        self.forward(self.ray.get(self.coordinator.drain_log.remote()))
        self.transport = self.ray.get(self.coordinator.stats.remote())
        for rank, result in enumerate(results):
            if "log" in result:
                for line in result["log"][self.next_line.get((epoch, rank), 0):]:
                    self.emit(epoch, rank, line)
        for key in sorted(self.held):
            if key[0] == epoch:
                self.emit(epoch, key[1], self.held.pop(key))
        self.next_line = {k: 1 << 62 for k in self.next_line}  # late arrivals are dropped

    def start(self) -> None:
        ray = self.ray
        self.coordinator = ray.remote(num_cpus=0)(_Coordinator).remote(self.num_workers)
        options = dict(num_cpus=self.num_cpus_per_worker, num_gpus=self.num_gpus_per_worker,
                       max_restarts=self.max_attempts, max_task_retries=0,
                       scheduling_strategy="SPREAD")
        if self.env:
            options["runtime_env"] = {"env_vars": {k: str(v) for k, v in self.env.items()}}
        worker_class = ray.remote(_Worker)
        fields = _config_fields(self.config)
        self.workers = [worker_class.options(**options).remote(fields, self.num_cpus_per_worker)
                        for _ in range(self.num_workers)]
        try:
            self.infos = ray.get([w.info.remote() for w in self.workers], timeout=self.start_timeout)
        except ray.exceptions.RayActorError as e:
            raise MegataxError(
                f"ray: a worker actor could not start (is mega_taxonomy installed on every "
                f"node? docs/ray.md): {_first_line(str(e))}", "unavailable") from e
        except ray.exceptions.GetTimeoutError:
            raise MegataxError(
                f"ray: {self.num_workers} workers of {self.num_cpus_per_worker} CPU and "
                f"{self.num_gpus_per_worker} GPU each did not start within "
                f"{self.start_timeout:.0f} s; the cluster has {ray.cluster_resources()}",
                "unavailable") from None
        self.say(f"ray: {self.num_workers} workers started: " + ", ".join(
            f"{r}: pid {i['pid']} on {i['node']}" for r, i in enumerate(self.infos)))

    def stop(self) -> None:
        for handle in [*self.workers, self.coordinator]:
            if handle is not None:
                try:
                    self.ray.kill(handle)
                except Exception:  # already gone
                    pass

    def attempt(self, epoch: int, resume: bool) -> List[dict]:
        """Runs the fit on every worker; returns their results by rank (status ok, aborted,
        error or died). A failure of one aborts the others (they then return)."""
        ray = self.ray
        ray.get(self.coordinator.begin.remote(epoch))
        refs = [w.fit.remote(self.coordinator, epoch, rank, self.num_workers, self.input_uri,
                             self.output_uri, resume) for rank, w in enumerate(self.workers)]
        rank_of = {ref: rank for rank, ref in enumerate(refs)}
        results: List[Optional[dict]] = [None] * self.num_workers
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            self.forward(ray.get(self.coordinator.drain_log.remote()))
            for ref in ready:
                rank = rank_of[ref]
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    result = {"status": "died", "message": _first_line(str(e))}
                except ray.exceptions.RayError as e:
                    result = {"status": "error", "code": "internal", "message": _first_line(str(e))}
                results[rank] = result
                if result["status"] in ("error", "died"):
                    what = "died" if result["status"] == "died" else "failed"
                    self.coordinator.abort.remote(epoch, f"worker {rank} {what}: {result['message']}")
        self.finish_log(epoch, results)  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def wait_for_restart(self, rank: int) -> None:
        ray = self.ray
        # While Ray restarts the actor, a call may fail with ActorUnavailableError ("the actor
        # is restarting"): that is transient, so ask again until start_timeout has passed.
        deadline = time.monotonic() + self.start_timeout
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            try:
                info = ray.get(self.workers[rank].info.remote(), timeout=left)
                break
            except ray.exceptions.ActorUnavailableError as e:
                if time.monotonic() >= deadline:
                    raise MegataxError(f"ray: worker {rank} did not come back within "
                                       f"{self.start_timeout:.0f} s: {_first_line(str(e))}",
                                       "unavailable") from None
                time.sleep(0.2)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
                raise MegataxError(f"ray: worker {rank} died and could not be restarted: "
                                   f"{_first_line(str(e))}", "unavailable") from None
        if info["pid"] == self.infos[rank]["pid"] and info["node"] == self.infos[rank]["node"]:
            self.say(f"ray: worker {rank} is reachable again (pid {info['pid']})")
            return
        self.restarts[rank] += 1
        self.infos[rank] = info
        self.say(f"ray: worker {rank} restarted: pid {info['pid']} on {info['node']}")

    def run(self, resume: bool) -> dict:
        self.start()
        for epoch in range(1, self.max_attempts + 1):
            self.say(f"ray: attempt {epoch}/{self.max_attempts} on {self.num_workers} workers"
                     + (" (resume)" if resume else ""))
            results = self.attempt(epoch, resume)
            if all(r["status"] == "ok" for r in results):
                return self.report(results[0]["report"], epoch)
            errors = [(rank, r) for rank, r in enumerate(results) if r["status"] == "error"]
            fatal = [(rank, r) for rank, r in errors if r["code"] not in _RETRYABLE_CODES]
            if fatal:
                rank, r = fatal[0]
                self.say(f"ray: worker {rank} failed ({r['code']}), not retried: {r['message']}")
                where = f" (ray worker {rank}/{self.num_workers} on {self.infos[rank]['node']})"
                raise error_class(r["code"])(r["message"] + where, r["code"])
            dead = [rank for rank, r in enumerate(results) if r["status"] == "died"]
            causes = [f"worker {rank} died" for rank in dead] + [
                f"worker {rank}: {r['message']}" for rank, r in errors]
            cause = "; ".join(causes) or "aborted"
            if epoch == self.max_attempts:
                raise MegataxError(f"ray: the fit failed {epoch} times; last: {cause} (the "
                                   "taxonomy keeps its last committed level: resume to "
                                   "continue)", "unavailable")
            self.say(f"ray: attempt {epoch} failed: {cause}; retrying from the last committed "
                     "level")
            for rank in dead:
                self.wait_for_restart(rank)
            resume = True
        raise AssertionError("unreachable")

    def report(self, report: dict, attempts: int) -> dict:
        report = dict(report)
        report["executor"] = "ray"
        report["attempts"] = attempts
        report["workers"] = [
            dict(rank=rank, pid=info["pid"], node=info["node"], restarts=self.restarts[rank],
                 log=list(self.worker_lines[rank]))
            for rank, info in enumerate(self.infos)]
        report["log"] = list(self.lines)
        report["transport"] = dict(self.transport)
        return report


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def fit_on_ray(
    config: Any,
    input: str,
    output: str,
    *,
    num_workers: int = 2,
    num_gpus_per_worker: float = 0,
    num_cpus_per_worker: float = 1,
    resume: bool = False,
    max_attempts: int = 3,
    address: Optional[str] = None,
    progress: bool = True,
    log: Optional[Callable[[str], Any]] = None,
    env: Optional[Mapping[str, str]] = None,
    start_timeout: float = 300.0,
) -> dict:
    """Fits a taxonomy with ``num_workers`` Ray actors; the same tree as ``TaxonomyEngine.fit``.

    Args:
        config: the taxonomy's settings: a ``TaxonomyConfig``, a dict of ``TaxonomyEngine``
            keyword arguments (``storage_uri`` included) or a ``TaxonomyEngine``.
        input: URI glob of the input shards, read by the workers (every node must see it:
            a shared file system or an object store; a relative path is made absolute).
        output: where the workers write the per-shard outputs (same rule).
        num_workers: worker actors (ranks); worker 0 also drives.
        num_gpus_per_worker: GPUs reserved per worker (Ray sets CUDA_VISIBLE_DEVICES).
        num_cpus_per_worker: CPUs reserved per worker; also the engine's threads when the
            config says ``threads=0``.
        resume: continue the fit found at ``storage_uri`` (e.g. after the driver died).
        max_attempts: attempts in all; a worker death or a transient error ("unavailable")
            costs one, and the next attempt resumes from the last committed level. Each
            worker actor may also be restarted this many times.
        address: the Ray cluster to use when Ray is not initialised yet: None starts a local
            instance on this machine (127.0.0.1 only, no dashboard, usage statistics off)
            and shuts it down at the end -- unless RAY_ADDRESS is set (as under ``ray job
            submit``): then, like "auto" or "ray://host:10001", it joins that cluster. When
            Ray is already initialised, it is used as it is.
        progress: print the log lines to stderr when ``log`` is None.
        log: called with each line: level steps (from worker 0), per-worker lines ("ray
            worker 1/2 (pid 4242 on 10.0.0.7): level 1: assigned 5 shards [0,2,3,5,8], ...")
            and the driver's Ray events (workers started, died, restarted, attempts).
        env: environment variables for the worker actors (their runtime_env).
        start_timeout: seconds to wait for the workers to start (or restart) before giving up
            (e.g. the cluster lacks the GPUs asked for).

    Returns:
        Worker 0's fit report (as ``TaxonomyEngine.fit``; after a retry its "levels" are those
        of the last attempt and "resumed_from_level" where it resumed) plus "executor":
        "ray", "attempts", "workers" ([{"rank", "pid", "node", "restarts", "log"}] with each
        worker's own log lines), "log" (every line given to ``log``) and "transport" (what
        the last attempt moved through the coordinator: "allgathers" (collectives),
        "allgather_bytes" (payload bytes sent), "shard_claims" (next_shard calls)).

    Raises:
        MegataxError (or MegataxValueError / MegataxNotFoundError): a worker's engine failed
            with an error that retrying cannot cure (the engine's message, naming the file;
            ``.code`` its code), or the attempts ran out (code "unavailable").
        ImportError: Ray is not installed.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    cfg = _as_config(config)
    cfg.storage_uri = _absolute(cfg.storage_uri)
    if log is None and progress:
        log = _stderr_log
    # Under `ray job submit` (or with RAY_ADDRESS set) "no address" means the job's cluster.
    local = address is None and not os.environ.get("RAY_ADDRESS")
    ray = _import_ray(local=local)
    started = False
    if not ray.is_initialized():
        if local:
            cpus = max(os.cpu_count() or 1, int(num_workers * num_cpus_per_worker + 0.999))
            ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR,
                     namespace="mega_taxonomy")
        else:
            ray.init(address=address, logging_level=logging.WARNING, namespace="mega_taxonomy")
        started = True
    driver = _Driver(ray, cfg, _absolute(os.fspath(input)), _absolute(os.fspath(output)),
                     num_workers=num_workers, num_cpus_per_worker=num_cpus_per_worker,
                     num_gpus_per_worker=num_gpus_per_worker, max_attempts=max_attempts,
                     env=env, log=log, start_timeout=start_timeout)
    try:
        return driver.run(resume)
    finally:
        driver.stop()
        if started:
            ray.shutdown()


# ---- python -m mega_taxonomy.ray: the entry point of `ray job submit` --------------------


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m mega_taxonomy.ray",
        description="Fit a taxonomy on a Ray cluster (or a local Ray instance). The tree is "
                    "the same as `megatax fit` on the same data and settings.")
    p.add_argument("--input", required=True, help="URI glob of the input shards")
    p.add_argument("--storage", required=True, help="where the model and its state live")
    p.add_argument("--output", required=True, help="where the per-shard paths go")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--branching", default="100", help="b or b1,b2,... (one per level)")
    p.add_argument("--metric", default="l2", choices=["l2", "ip", "cosine"])
    p.add_argument("--sample-per-centroid", type=int, default=256)
    p.add_argument("--max-iter", type=int, default=20)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="engine threads per worker (0: --cpus-per-worker)")
    p.add_argument("--lloyd-passes", type=int, default=0)
    p.add_argument("--batch-rows", type=int, default=65536)
    p.add_argument("--memory-budget-mb", type=int, default=1024)
    p.add_argument("--workers", type=int, default=2, help="worker actors (ranks)")
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0)
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--address", default=None,
                   help="Ray cluster (default: the job's cluster under `ray job submit`, "
                        "else a local instance)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the worker actors (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the fit at --storage")
    p.add_argument("--quiet", action="store_true", help="no log lines")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m mega_taxonomy.ray --input ... --storage ... --output ...``: exit status 0,
    or 1 with one line naming what failed."""
    a = _parse_args(argv)
    config = dict(
        n_levels=a.levels, branching_factor=[int(b) for b in a.branching.split(",")],
        storage_uri=a.storage, metric=a.metric, sample_per_centroid=a.sample_per_centroid,
        max_iter=a.max_iter, tol=a.tol, seed=a.seed, threads=a.threads,
        lloyd_passes=a.lloyd_passes, batch_rows=a.batch_rows,
        memory_budget_mb=a.memory_budget_mb)
    env = {}
    for item in a.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"megatax ray: --env {item!r}: expected NAME=VALUE", file=sys.stderr)
            return 1
        env[name] = value
    try:
        report = fit_on_ray(config, a.input, a.output, num_workers=a.workers, env=env,
                            num_cpus_per_worker=a.cpus_per_worker,
                            num_gpus_per_worker=a.gpus_per_worker, resume=a.resume,
                            max_attempts=a.max_attempts, address=a.address,
                            progress=not a.quiet)
    except (MegataxError, ValueError) as e:
        print(f"megatax ray: {e}", file=sys.stderr)
        return 1
    if not a.quiet:
        _stderr_log(f"ray: fit {report['points']} points, {len(report['levels'])} levels in "
                    f"{report['seconds']:.2f} s ({report['attempts']} attempt(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
