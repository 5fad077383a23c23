"""Data parallel on Ray (DESIGN section 9): a model with `"workers": k` computes each batch
of forward_backward, train_step and backward in k shards on k worker actors.

    ModelHost ("host-<i>")     the model itself (a Sharded proxy over its core Model): validates,
        |                      splits the batch, adds the shards' gradients, steps the optimizer
    "worker-<j>", j < k        shared by the models of the namespace, on the j-th node (mod the
                               nodes): a replica of each model at its last version, one shard each

The parameters reach the workers through the object store: the host puts them there once per
version (ray.put), and sends each worker only the reference; a worker fetches them when its
replica is of an older version, so a step ships the parameters once, not once per request.
What crosses per request: each worker's shard of inputs and targets one way, its gradients
(the size of the parameters), loss and outputs back.

A kept tape (forward with keep_tape, then backward) is sharded too: a training forward runs on
the workers, each keeping its shard's tape (under a random token, at most TAPES_PER_MODEL times
max_tapes of all models, the oldest dropped, and none older than tape_ttl_seconds), and the host
keeps a ShardedTape on its Shelf, as any tape: which workers, the token, the rows of each and the
version. Backward checks on the host, as core does, that the tape is not stale and that the
targets (or grad_output) fit the outputs, so a bad request changes nothing anywhere and keeps
the tape; then each worker backprops its tape from its rows and the host adds the shards. A
worker's tape gone (the worker restarted or placed again, the tape evicted) is a 404
tape_not_found, as a host's tape gone. An eval forward (train false) needs no tape: it runs on
the host.
"""

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.exceptions import ActorUnschedulableError, RayActorError

from core import (
    Backprop,
    InputError,
    Model,
    Shard,
    Tape,
    TrainStepResult,
)
from service.blas import POLICY
from service.errors import ServiceError, invalid
from service.settings import Settings

REPLICAS = 32  # models a worker keeps a replica of, the least recently used dropped first
TAPES_PER_MODEL = 4  # a worker keeps at most this many times settings.max_tapes shard tapes


def parallel(model: Model, settings: Settings) -> "Sharded":
    """Gives `model` computing its batches in shards over spec["workers"] worker actors, or a
    422 at workers if its layers make a shard's result depend on the rest of the batch."""
    problem = model.shard_problem()
    if problem is not None:
        raise invalid(["body", "workers"], f"workers={model.spec['workers']} splits each batch over workers, "
                      f"and {problem}; use workers 1")
    return Sharded(model, settings)


class Sharded:
    """A core Model whose training batches are computed in shards by worker actors; anything
    else is the model's own: attributes are read from it and written to it (core's methods
    called with a Sharded as self, `Model.zero_grad(sharded)`, change the model)."""

    OWN = frozenset({"model", "settings", "incarnation", "workers", "_shipped"})

    def __init__(self, model: Model, settings: Settings):
        self.model, self.settings = model, settings
        self.incarnation = secrets.token_hex(8)  # a model deleted and created again is another
        self.workers = self._workers()
        self._shipped: tuple[int, Any] | None = None  # (version, ref of the parameters in the object store)

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.model, name, value)

    def train_batch(self, x, targets=None, *, grad_output=None, need_input_grad: bool = False) -> Backprop:
        """Model.train_batch, its batch split over the workers; everything is checked before."""
        model = self.model
        x, targets, grad_output = model.validate_batch(x, targets, grad_output)
        workers = self._current_workers()
        k = min(len(workers), len(x))  # no empty shard
        parts = [np.array_split(a, k) if a is not None else [None] * k for a in (x, targets, grad_output)]
        key, params = self._key(), [self._parameters_ref()]
        return model.add_shards(self._gather([
            worker.shard.remote(key, params, model.spec, xi, ti, gi, need_input_grad)
            for worker, xi, ti, gi in zip(workers, *parts)]))

    def forward(self, x, train: bool = False, rng: np.random.Generator | None = None) -> tuple[np.ndarray, Any]:
        """Model.forward; in training, split over the workers, each keeping its shard's tape:
        the tape given is then a ShardedTape, for backprop. An eval forward runs here."""
        model = self.model
        if not train:
            return model.forward(x, train=False, rng=rng)
        x = model.validate_inputs(x, train=True)
        workers = self._current_workers()
        k = min(len(workers), len(x))
        parts = np.array_split(x, k)
        token, key, params = secrets.token_urlsafe(12), self._key(), [self._parameters_ref()]
        outputs = np.concatenate(self._gather([worker.forward.remote(key, params, model.spec, token, xi)
                                               for worker, xi in zip(workers, parts)]))
        rows = tuple(len(xi) for xi in parts)
        return outputs, ShardedTape(workers[:k], token, rows, model.version, x.shape, outputs.shape)

    def backprop(self, tape: Any, outputs: np.ndarray | None = None, *, targets=None, grad_output=None,
                 need_input_grad: bool = False) -> Backprop:
        """Model.backprop; through a ShardedTape, each worker backprops its shard's tape and the
        shards are added here. Stale tapes and bad targets are refused before anything changes."""
        model = self.model
        if not isinstance(tape, ShardedTape):
            return model.backprop(tape, outputs, targets=targets, grad_output=grad_output,
                                  need_input_grad=need_input_grad)
        targets, grad_output = model.check_tape(tape, targets, grad_output)
        if self.workers is None or any(a is not b for a, b in zip(tape.workers, self.workers)):
            raise _tape_gone("its workers were placed again since the forward")
        cuts = np.cumsum(tape.rows)[:-1]
        parts = [np.split(a, cuts) if a is not None else [None] * len(tape.rows) for a in (targets, grad_output)]
        shards = self._gather([
            worker.backprop.remote(tape.token, ti, gi, need_input_grad)
            for worker, ti, gi in zip(tape.workers, *parts)])
        if any(shard is None for shard in shards):
            raise _tape_gone("a worker no longer holds its shard (restarted, or the tape evicted or expired)")
        return model.add_shards(shards)

    # Core's own methods, whose batch is this train_batch: train_step checks lr first, steps
    # with the model's own step (once, here) and, if the step is refused, leaves the model as it was.
    def forward_backward(self, x, targets=None, *, grad_output=None) -> float | None:
        return Model.forward_backward(self, x, targets, grad_output=grad_output)

    def train_step(self, x, targets, lr: float | None = None) -> TrainStepResult:
        return Model.train_step(self, x, targets, lr)

    def _workers(self) -> list[Any]:
        """Gives the handles of workers 0..k-1, created where they are not: worker i on the
        i-th node alive (mod the nodes), pinned there (service.cluster.spread)."""
        from service.cluster import _actor, spread  # cluster imports this module

        return [_actor(ShardWorker, f"worker-{i}", self.settings.ray_namespace, scheduling_strategy=spread(i))
                .remote(self.settings) for i in range(self.model.spec["workers"])]

    def _current_workers(self) -> list[Any]:
        if self.workers is None:
            self.workers = self._workers()
        return self.workers

    def _key(self) -> tuple[str, str, int]:
        """Gives what names the replica and version a worker computes on."""
        return self.model.spec["id"], self.incarnation, self.model.version

    def _gather(self, calls: list[Any]) -> list[Any]:
        """Gives the workers' answers to `calls`."""
        try:
            return ray.get(calls)
        except (RayActorError, ActorUnschedulableError):  # dead, or its node gone (it is pinned there)
            # A worker's node may be gone, and a worker is pinned to its node: the next batch
            # looks the workers up again, and places those gone on the nodes alive then (the
            # others, shared with other models, are left alone). This one answers 503
            # model_unavailable (nothing was added), to be retried; a kept tape's shards may
            # be gone with them.
            self.workers = None
            raise

    def _parameters_ref(self) -> Any:
        """Gives the object-store reference of this version's parameters, put there once."""
        version = self.model.version
        if self._shipped is None or self._shipped[0] != version:
            self._shipped = (version, ray.put(self.model.parameters()))
        return self._shipped[1]


@dataclass(eq=False)
class ShardedTape:
    """A training forward split over workers: each of `workers` keeps its shard's tape under
    `token`, for the rows of `rows` in order; made at the model's `version`."""

    workers: list[Any]
    token: str
    rows: tuple[int, ...]
    version: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


def _tape_gone(why: str) -> ServiceError:
    return ServiceError(404, "tape_not_found", f"the tape's shards are gone: {why}; run forward again")


@dataclass(eq=False)
class Replica:
    """A worker's copy of one model, at the parameters of `version`."""

    model: Model
    version: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class ShardWorker:
    """A Ray actor computing shards of batches, on a replica of each model it has seen."""

    def __init__(self, settings: Settings):
        POLICY.fix(settings.blas_threads)
        self.replicas: OrderedDict[tuple[str, str], Replica] = OrderedDict()  # by (id, incarnation)
        self.lock = threading.Lock()
        self.node = ray.get_runtime_context().get_node_id()
        self.settings = settings
        # token -> (replica, tape, outputs, made at): the shard tapes kept for a later backprop
        self.tapes: OrderedDict[str, tuple[Replica, Tape, np.ndarray, float]] = OrderedDict()

    def shard(self, key: tuple[str, str, int], params: list, spec: dict, x, targets, grad_output,
              need_input_grad: bool) -> Shard:
        """Gives one shard computed at the parameters of version key[2], fetched from the object
        store (`params[0]`, a reference Ray does not resolve) only if the replica is of another."""
        *model_key, version = key
        replica = self._replica(tuple(model_key), spec)
        with replica.lock, POLICY.computing():
            if replica.version != version:
                replica.model.set_parameters(ray.get(params[0]))
                replica.version = version
            return replica.model.shard(x, targets, grad_output=grad_output, need_input_grad=need_input_grad)

    def forward(self, key: tuple[str, str, int], params: list, spec: dict, token: str, x) -> np.ndarray:
        """Gives one shard's outputs of a training forward at version key[2] (as `shard`
        fetches it), keeping its tape under `token` for `backprop`."""
        *model_key, version = key
        replica = self._replica(tuple(model_key), spec)
        with replica.lock, POLICY.computing():
            if replica.version != version:
                replica.model.set_parameters(ray.get(params[0]))
                replica.version = version
            outputs, tape = replica.model.shard_forward(x)
        with self.lock:
            self._expire()
            while len(self.tapes) >= TAPES_PER_MODEL * self.settings.max_tapes:
                self.tapes.popitem(last=False)
            self.tapes[token] = (replica, tape, outputs, time.monotonic())
        return outputs

    def backprop(self, token: str, targets, grad_output, need_input_grad: bool) -> Shard | None:
        """Gives the Shard of a backprop through the tape kept under `token`, or None if it is
        not here (this worker restarted, or the tape was evicted or expired). The tape is used
        up, unless its input was refused (a corrected request may use it again)."""
        with self.lock:
            self._expire()
            kept = self.tapes.get(token)
        if kept is None:
            return None
        replica, tape, outputs, _ = kept
        try:
            with replica.lock, POLICY.computing():
                shard = replica.model.shard_backprop(tape, outputs, targets=targets, grad_output=grad_output,
                                                     need_input_grad=need_input_grad)
        except InputError:
            raise
        except BaseException:
            self._drop(token)
            raise
        self._drop(token)
        return shard

    def _drop(self, token: str) -> None:
        with self.lock:
            self.tapes.pop(token, None)

    def _expire(self) -> None:
        """Drops the tapes older than tape_ttl_seconds (self.lock held)."""
        oldest = time.monotonic() - self.settings.tape_ttl_seconds
        while self.tapes and next(iter(self.tapes.values()))[3] < oldest:
            self.tapes.popitem(last=False)

    def _replica(self, key: tuple[str, str], spec: dict) -> Replica:
        with self.lock:
            replica = self.replicas.pop(key, None) or Replica(Model.from_spec(spec))
            self.replicas[key] = replica
            while len(self.replicas) > REPLICAS:
                self.replicas.popitem(last=False)
            return replica

    def tapes_held(self) -> int:
        """Gives how many shard tapes this worker keeps."""
        with self.lock:
            self._expire()
            return len(self.tapes)

    def ping(self) -> str:
        return self.node
