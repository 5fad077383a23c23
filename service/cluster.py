"""The Ray store: the routes of service/store.py on a Ray cluster (DESIGN section 9).

    front-ends      ClusterStore, any number, on any node: no state but caches
        |
    "registry"      one actor: every id with its owner, the limits, creation and deletion
        |
    "host-<i>"      ray_hosts actors, spread over the nodes: a Shelf each (models, tapes,
        |           checkpoints); a thread per request, a lock per model
    "worker-<i>"    (a spec with "workers": k) a shard of a batch each (service/shards.py)

A model lives on the host its id hashes to, so a host restarted by Ray reloads exactly its
models from the data directory, and any front-end finds any model without asking anyone.
Every actor is named in the namespace `ray_namespace` and detached: front-ends come and go,
a SIGKILLed front-end loses nothing. A front-end caches what never changes for a model's
life (owner, dtypes, size), keyed by the host's incarnation of the model: a host that
restarted, or a model deleted and created again, invalidates it.
"""

import asyncio
import logging
import os
import secrets
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

# A Ray node started by this process (--ray local) binds every port to 127.0.0.1 only if this
# is set when ray is imported (ray_constants reads it then); joining a cluster ignores it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from ray.exceptions import ActorDiedError, ActorUnschedulableError, RayError, RayTaskError

from core import Model, StoppedError
from service.blas import POLICY
from service.budget import Budget
from service.errors import ModelNotFound, ServiceError
from service.persistence import Checkpoints
from service.registry import Registry
from service.settings import Settings
from service.shelf import Held, Save, Shelf, describe
from service.store import every, expire_data, expiry_seconds, flush_dirty
from service.threads import off_loop

log = logging.getLogger("gradserve")

T = TypeVar("T")
REGISTRY = "registry"
RETRY_AFTER_SECONDS = 1


def host_of(model_id: str, hosts: int) -> int:
    """Gives the index of the host a model lives on: a hash of its id, the same everywhere."""
    return zlib.crc32(model_id.encode()) % hosts


class Moved(Exception):
    """The front-end's cached view of a model is of another incarnation: look it up again."""


# -- the actors ----------------------------------------------------------------------------


class ModelHost:
    """A Ray actor holding the models whose ids hash to it, on a Shelf.

    An async actor: a request waits for its model's asyncio lock without holding a thread, and
    computes on a worker thread (service/threads.py), so a crowd on one model never keeps the
    host's other models waiting."""

    def __init__(self, index: int, hosts: int, settings: Settings):
        self.name, self.settings = f"host-{index}", settings
        POLICY.fix(settings.blas_threads)
        checkpoints = Checkpoints(settings.data_dir)
        self.shelf = Shelf(settings, checkpoints)
        loaded, skipped = checkpoints.load_all(keep=lambda model_id: host_of(model_id, hosts) == index)
        self.locks: dict[str, asyncio.Lock] = {}
        self.nonces: dict[str, str] = {}
        for item in loaded:
            self._hold(self._parallel(Held(item.id, item.model, item.owner)))
        self.node = ray.get_runtime_context().get_node_id()
        self.stopped: set[str] = set()  # budgets whose clients have gone
        self._flusher: asyncio.Task | None = None
        self._expirer: asyncio.Task | None = None  # drops idle data sets
        if skipped:
            ray.get_actor(REGISTRY, namespace=settings.ray_namespace).skip.remote(skipped)
        log.info("%s: %d models loaded, %d skipped", self.name, len(loaded), len(skipped))

    def _parallel(self, held: Held) -> Held:
        """Gives `held` with a model that shards its batches over worker actors if its spec
        asks for workers (service/shards.py)."""
        if held.model.spec.get("workers", 1) > 1:
            from service.shards import parallel

            held.model = parallel(held.model, self.settings)
        return held

    def _hold(self, held: Held, write: bool = False) -> None:
        """Holds a model (its lock and incarnation first: a request may find it at once),
        writing its owner and checkpoint first if new."""
        self.locks[held.id] = asyncio.Lock()
        self.nonces[held.id] = secrets.token_hex(8)
        if write:
            self.shelf.add(held)
        else:
            self.shelf.hold(held)

    def _held(self, model_id: str, nonce: str | None = None) -> tuple[Held, asyncio.Lock]:
        held = self.shelf.held.get(model_id)
        if held is None:
            raise ModelNotFound.of(model_id)
        if nonce is not None and self.nonces.get(model_id) != nonce:
            raise Moved
        return held, self.locks[model_id]

    # -- what front-ends ask ---------------------------------------------------------------

    def facts(self, model_id: str) -> dict:
        """Gives what a front-end caches of a model: owner, dtypes, size, this incarnation."""
        held, _ = self._held(model_id)
        return {"owner": held.owner, "dtype": held.dtype, "input_dtype": held.input_dtype,
                "num_parameters": held.num_parameters, "nonce": self.nonces[model_id]}

    def describe(self, model_ids: list[str]) -> list[dict]:
        """Gives the description of each model held, with its placement."""
        placement = {"actor": self.name, "node": self.node}
        return [{**describe(held), "placement": placement}
                for model_id in model_ids if (held := self.shelf.held.get(model_id)) is not None]

    def describe_one(self, model_id: str, nonce: str) -> dict:
        """Gives the description of this incarnation of a model."""
        self._held(model_id, nonce)
        return self.describe([model_id])[0]

    async def run(self, model_id: str, nonce: str, fn: Callable[..., T], args: tuple, save: Save,
                  keep_tape: bool | None, stop: tuple[str, float] | None) -> T:
        self._wake()
        held, lock = self._held(model_id, nonce)
        async with lock:
            if stop is None:
                return await off_loop(self.shelf.work, held, fn, args, save, keep_tape)
            key, deadline = stop
            should_stop = lambda: key in self.stopped or time.time() > deadline  # noqa: E731
            try:
                if should_stop():
                    raise StoppedError("the request waited for the model and was not started")
                return await off_loop(self.shelf.work, held, partial(fn, should_stop=should_stop), args, save,
                                      keep_tape)
            finally:
                self.stopped.discard(key)

    async def run_on_tape(self, model_id: str, nonce: str, tape_id: str, fn: Callable[..., T], args: tuple) -> T:
        self._wake()
        held, lock = self._held(model_id, nonce)
        async with lock:
            return await off_loop(self.shelf.work_on_tape, held, tape_id, fn, args)

    async def history(self, model_id: str, nonce: str, since: int | None, limit: int | None,
                      points: int | None) -> dict:
        self._wake()
        held, lock = self._held(model_id, nonce)
        async with lock:
            snapshot = await off_loop(self.shelf.snapshot, held)
        return await off_loop(self.shelf.read, held, snapshot, since, limit, points)

    def stop(self, key: str) -> None:
        """Tells the work of budget `key` to stop: its client has gone."""
        self.stopped.add(key)

    async def add(self, model_id: str, owner: str | None, settings: Settings, spec: dict | None,
                  checkpoint: bytes | None) -> dict:
        """Builds a model from a spec or a checkpoint (under the front-end's limits), writes it and holds it."""
        limits = {"max_parameters": settings.max_parameters, "max_layers": settings.max_layers}

        def build() -> None:
            model = Model.from_spec({**spec, "id": model_id}, **limits) if spec is not None \
                else Model.from_bytes(checkpoint, **limits)
            model.spec["id"] = model_id
            self._hold(self._parallel(Held(model_id, model, owner)), write=True)

        await off_loop(build)
        return self.describe([model_id])[0]

    async def remove(self, model_id: str) -> None:
        held, lock = self._held(model_id)
        async with lock:
            await off_loop(self.shelf.remove, held)
            self.locks.pop(model_id, None)
            self.nonces.pop(model_id, None)

    async def pending_tapes(self) -> int:
        self._wake()
        return self.shelf.pending_tapes()

    async def flush(self) -> None:
        """Writes every model with steps not yet on disk."""
        await flush_dirty(self.shelf, lambda held: self.locks.get(held.id))

    async def expire_data(self) -> None:
        """Drops every data set unused for GRADSERVE_DATA_TTL_SECONDS."""
        await expire_data(self.shelf, lambda held: self.locks.get(held.id))

    def _wake(self) -> None:
        """Starts the interval flusher (durability "interval") and the expirer of idle data sets
        from within the actor's event loop: a restarted host starts them at its first request, or
        a front-end's first refresh."""
        loop = asyncio.get_running_loop()
        if self.settings.durability == "interval" and self._flusher is None:
            self._flusher = loop.create_task(every(self.settings.durability_interval_seconds, self.flush,
                                                   "interval checkpoint"))
        if self._expirer is None:
            self._expirer = loop.create_task(every(expiry_seconds(self.settings), self.expire_data,
                                                   "dropping idle data sets"))

    async def ping(self) -> str:
        self._wake()
        return self.node


class ClusterRegistry:
    """The Ray actor that holds every model id of the cluster with its owner (a Registry), and
    creates and deletes models on their hosts."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.registry = Registry()
        self.registry.owners.update(Checkpoints(settings.data_dir).ids())
        self.changing = threading.Lock()
        self.hosts = [self._host(i) for i in range(settings.ray_hosts)]

    def _host(self, index: int) -> Any:
        """Gives host `index`, started on the nodes alive now unless it runs (or restarts)."""
        s = self.settings
        return _actor(ModelHost, f"host-{index}", s.ray_namespace, scheduling_strategy=spread(index),
                      max_concurrency=1000).remote(index, s.ray_hosts, s)

    def host_count(self) -> int:
        return len(self.hosts)

    def revive(self, index: int) -> None:
        """Places host `index` again if it died for good (its node gone); it reloads its models."""
        with self.changing:
            try:
                ray.get(self.hosts[index].ping.remote())
            except (ActorDiedError, ActorUnschedulableError):
                log.warning("host-%d is gone with its node: placing it again", index)
                self.hosts[index] = self._host(index)
            except RayError:
                pass  # restarting: Ray brings it back

    def count(self) -> int:
        with self.changing:
            return len(self.registry)

    def ids_of(self, owner: str | None) -> list[str]:
        with self.changing:
            return self.registry.ids_of(owner)

    def skip(self, skipped: dict[str, str]) -> None:
        """Takes note of checkpoints a host could not read: their ids stay reserved."""
        with self.changing:
            for model_id in skipped:
                self.registry.owners.pop(model_id, None)
            self.registry.skipped.update(skipped)

    def create(self, model_id: str | None, owner: str | None, settings: Settings, spec: dict | None = None,
               checkpoint: bytes | None = None) -> dict:
        """Registers a new model under the calling front-end's limits and builds it on its host.

        The id is reserved (and counted) while its host builds it, without holding the lock
        that other creations and deletions take meanwhile."""
        with self.changing:
            model_id = self.registry.free_id(model_id, owner, settings)
            self.registry.owners[model_id] = owner
        try:
            host = self.hosts[host_of(model_id, len(self.hosts))]
            return ray.get(host.add.remote(model_id, owner, settings, spec, checkpoint))
        except BaseException:
            with self.changing:
                self.registry.owners.pop(model_id, None)
            raise

    def delete(self, model_id: str, owner: str | None) -> None:
        with self.changing:
            if not self.registry.visible(model_id, owner):
                raise ModelNotFound.of(model_id)
        ray.get(self.hosts[host_of(model_id, len(self.hosts))].remove.remote(model_id))
        with self.changing:
            self.registry.owners.pop(model_id, None)


def spread(index: int) -> NodeAffinitySchedulingStrategy:
    """Gives the placement of the `index`-th actor of a kind: the nodes alive in turn.

    Pinned (a hard affinity): a soft one let Ray put every host on one node of two, one run in
    a few. A pinned actor whose node is gone dies for good (ActorUnschedulableError, then
    ActorDiedError) instead of restarting elsewhere: whoever meets that places it again
    (ClusterRegistry.revive for a host, Sharded._gather for a worker)."""
    nodes = sorted(node["NodeID"] for node in ray.nodes() if node["Alive"])
    return NodeAffinitySchedulingStrategy(nodes[index % len(nodes)], soft=False)


def _actor(cls: type, name: str, namespace: str, **options: Any):
    """Gives the Ray actor class for `cls`, named, detached and restarted by Ray when it dies
    (a threaded actor of 64 threads unless `options` say otherwise)."""
    return ray.remote(cls).options(**{"name": name, "namespace": namespace, "lifetime": "detached",
                                      "get_if_exists": True, "max_restarts": -1, "max_task_retries": 0,
                                      "max_concurrency": 64, "num_cpus": 0, **options})


# -- the front-end's store -------------------------------------------------------------------


@dataclass(eq=False)
class Entry:
    """What a front-end knows of one model: fixed for this incarnation of it on its host; and
    who asks (each request gets its own copy of the cached entry)."""

    id: str
    owner: str | None
    dtype: Any
    input_dtype: Any
    num_parameters: int
    nonce: str
    host: int  # the index of its host
    caller: str | None = None

    def visible_to(self, caller: str | None) -> bool:
        return self.owner is None or self.owner == caller


CACHED_MODELS = 100_000  # entries a front-end keeps before it starts again from none


class ClusterStore:
    """The store of a front-end on Ray: the methods of ModelStore, run on the cluster's actors."""

    # A stream's batches are saved as a train_step's are: a host may die between two of them,
    # and what the stream answers as completed must not be lost with it.
    stream_save: Save = "step"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ready = False
        self._started_ray = False
        self._entries: dict[str, Entry] = {}
        self._counts = {"models": 0, "tapes": 0}
        self._refresher: asyncio.Task | None = None
        self.registry = self.hosts = None

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Joins (or starts) the cluster, then its registry and hosts (started by the first front-end)."""
        await asyncio.to_thread(self._connect)
        s = self.settings
        self.registry = _actor(ClusterRegistry, REGISTRY, s.ray_namespace).remote(s)
        hosts = await self.registry.host_count.remote()
        self.hosts = [ray.get_actor(f"host-{i}", namespace=s.ray_namespace) for i in range(hosts)]
        await asyncio.gather(*(self._ask(i, "ping") for i in range(hosts)))  # every model loaded
        await self._refresh()
        self._refresher = asyncio.create_task(self._refresh_every(1.0))
        self.ready = True
        log.info("on Ray (%s, namespace %s): %d hosts, %d models, data in %s", s.ray_address, s.ray_namespace,
                 hosts, self._counts["models"], s.data_dir)

    def _connect(self) -> None:
        if ray.is_initialized():
            return
        local = {"include_dashboard": False} if self.settings.ray_address == "local" else {}  # a new instance
        ray.init(address=self.settings.ray_address, namespace=self.settings.ray_namespace, log_to_driver=False, **local)
        self._started_ray = True

    async def close(self) -> None:
        """Writes every step the hosts hold unwritten, as the embedded store does at shutdown
        (a local instance then stops with this front-end)."""
        self.ready = False
        if self._refresher is not None:
            self._refresher.cancel()
        try:
            await self.flush()
        except ServiceError:
            log.warning("a host could not be flushed at shutdown (it is restarting or gone)")
        if self._started_ray and self.settings.ray_address == "local":
            await asyncio.to_thread(ray.shutdown)

    async def flush(self) -> None:
        await asyncio.gather(*(self._ask(i, "flush") for i in range(len(self.hosts))))

    async def _refresh(self) -> None:
        self._counts["models"] = await self.registry.count.remote()
        self._counts["tapes"] = sum(await asyncio.gather(*(self._ask(i, "pending_tapes")
                                                           for i in range(len(self.hosts)))))

    async def _refresh_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self._refresh()
            except Exception:  # a host restarting: the figures wait for the next round
                pass

    def count(self) -> int:
        return self._counts["models"]

    def pending_tapes(self) -> int:
        return self._counts["tapes"]

    # -- models ------------------------------------------------------------------------

    async def get(self, model_id: str, owner: str | None) -> Entry:
        """Gives the model, or 404 if it does not exist or belongs to another key."""
        entry = self._entries.get(model_id)
        if entry is None or not entry.visible_to(owner):  # unknown here, or maybe a stale view of it
            entry = await self._look_up(model_id)
        if not entry.visible_to(owner):
            raise ModelNotFound.of(model_id)
        return replace(entry, caller=owner)

    async def _look_up(self, model_id: str) -> Entry:
        """Gives the model's entry as its host holds it now, and caches it."""
        self._entries.pop(model_id, None)
        host = host_of(model_id, len(self.hosts))
        facts = await self._ask(host, "facts", model_id)
        if len(self._entries) >= CACHED_MODELS:
            self._entries.clear()
        entry = self._entries[model_id] = Entry(model_id, facts["owner"], facts["dtype"], facts["input_dtype"],
                                                facts["num_parameters"], facts["nonce"], host)
        return entry

    async def info(self, entry: Entry) -> dict:
        """Gives the model's description, with its placement."""
        return await self._on_host(entry, "describe_one")

    async def list(self, owner: str | None) -> list[dict]:
        ids = await _call(self.registry.ids_of.remote(owner))
        by_host: dict[int, list[str]] = {}
        for model_id in ids:
            by_host.setdefault(host_of(model_id, len(self.hosts)), []).append(model_id)
        described = await asyncio.gather(*(self._ask(i, "describe", held) for i, held in by_host.items()))
        found = {info["id"]: info for infos in described for info in infos}
        return [found[model_id] for model_id in ids if model_id in found]

    async def create(self, spec: dict, owner: str | None) -> dict:
        return await _call(self.registry.create.remote(spec.get("id"), owner, self.settings, spec=spec))

    async def import_checkpoint(self, checkpoint: bytes, model_id: str | None, owner: str | None) -> dict:
        s = self.settings
        model = await asyncio.to_thread(Model.from_bytes, checkpoint, max_parameters=s.max_parameters,
                                        max_layers=s.max_layers)  # a bad checkpoint stops here: 422
        return await _call(self.registry.create.remote(model_id or model.spec.get("id"), owner, s,
                                                       checkpoint=checkpoint))

    async def delete(self, entry: Entry) -> None:
        await _call(self.registry.delete.remote(entry.id, entry.caller))
        self._entries.pop(entry.id, None)

    # -- running the engine ------------------------------------------------------------

    async def run(self, entry: Entry, fn: Callable[..., T], *args: Any, save: Save = "no",
                  budget: Budget | None = None, rows: int | None = None, keep_tape: bool | None = None) -> T:
        """Gives `fn(model, *args)` run on the model's host (ModelStore.run tells the options)."""
        if budget is None:
            return await self._on_host(entry, "run", fn, args, save, keep_tape, None)
        if budget.expired():
            raise budget.refusal("the request waited for the model and was not started")
        key = secrets.token_hex(8)
        watcher = asyncio.create_task(_tell_when_gone(budget, self.hosts[entry.host], key))
        try:
            return await self._on_host(entry, "run", fn, args, save, keep_tape,
                                       (key, time.time() + budget.deadline - time.monotonic()))
        except StoppedError as exc:
            raise budget.refusal(str(exc)) from None
        finally:
            watcher.cancel()

    async def run_on_tape(self, entry: Entry, tape_id: str, fn: Callable[..., T], *args: Any) -> T:
        return await self._on_host(entry, "run_on_tape", tape_id, fn, args)

    async def history(self, entry: Entry, since: int | None, limit: int | None, points: int | None) -> dict:
        """Gives the model's history records (Snapshot.read), read by its host outside the model's lock."""
        return await self._on_host(entry, "history", since, limit, points)

    async def _on_host(self, entry: Entry, method: str, *args: Any) -> Any:
        """Gives the host's answer; if the entry was of another incarnation of the model (the
        host restarted, or the model was deleted and created again), looks it up again once."""
        try:
            return await self._ask(entry.host, method, entry.id, entry.nonce, *args)
        except Moved:
            pass
        except ModelNotFound:
            self._entries.pop(entry.id, None)
            raise
        fresh = await self._look_up(entry.id)
        if not fresh.visible_to(entry.caller):
            raise ModelNotFound.of(entry.id)
        return await self._ask(fresh.host, method, entry.id, fresh.nonce, *args)

    async def _ask(self, index: int, method: str, *args: Any) -> Any:
        """Gives host `index`'s answer to `method(*args)`. A host gone for good (its node lost)
        answers 503 and is placed again, for the retry."""
        try:
            return await _call(getattr(self.hosts[index], method).remote(*args))
        except Unavailable as exc:
            if exc.gone:
                await _call(self.registry.revive.remote(index))
                self.hosts[index] = ray.get_actor(f"host-{index}", namespace=self.settings.ray_namespace)
            raise


async def _tell_when_gone(budget: Budget, host: Any, key: str) -> None:
    while not budget.client_gone:
        await asyncio.sleep(0.05)
    host.stop.remote(key)


class Unavailable(ServiceError):
    """503 model_unavailable: a failure of Ray's; `gone` if an actor died for good."""

    def __init__(self, cause: BaseException):
        super().__init__(503, "model_unavailable", "the model's host is restarting or unreachable; its models "
                         f"come back from their last checkpoint: retry ({type(cause).__name__})",
                         headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        self.gone = isinstance(cause, ActorDiedError | ActorUnschedulableError)


async def _call(ref: Any) -> Any:
    """Gives what an actor call answers: its own exceptions raised as they are; a failure of
    Ray's (an actor dead, restarting or not placeable, a node or an object lost, on the way
    or inside another actor's call) as 503 model_unavailable."""
    try:
        return await ref
    except RayError as exc:
        cause = exc
        while isinstance(cause, RayTaskError):  # an actor's exception, maybe raised through another actor
            cause = cause.cause
        if not isinstance(cause, RayError):
            raise cause from None
        raise Unavailable(cause) from None
