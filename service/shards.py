"""Data parallel on Ray (DESIGN section 9): a model with `"workers": k` computes each batch
of forward_backward and train_step in k shards on k worker actors.

    ModelHost ("host-<i>")     the model itself (a Sharded proxy over its core Model): validates,
        |                      splits the batch, adds the shards' gradients, steps the optimizer
    "worker-<j>", j < k        shared by the models of the namespace, on the j-th node (mod the
                               nodes): a replica of each model at its last version, one shard each

The parameters reach the workers through the object store: the host puts them there once per
version (ray.put), and sends each worker only the reference; a worker fetches them when its
replica is of an older version, so a step ships the parameters once, not once per request.
What crosses per request: each worker's shard of inputs and targets one way, its gradients
(the size of the parameters), loss and outputs back.

A kept tape (forward with keep_tape, then backward) stays on the host and runs unsharded: the
tape lives with the model, as for any model, and the result is the same.
"""

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from core import Backprop, Model, Shard, TrainStepResult
from service.blas import POLICY
from service.errors import invalid
from service.settings import Settings

REPLICAS = 32  # models a worker keeps a replica of, the least recently used dropped first


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
    else is the model's own (attributes and methods are delegated to it)."""

    def __init__(self, model: Model, settings: Settings):
        self.model, self.settings = model, settings
        self.incarnation = secrets.token_hex(8)  # a model deleted and created again is another
        self.workers = self._workers()
        self._shipped: tuple[int, Any] | None = None  # (version, ref of the parameters in the object store)

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def train_batch(self, x, targets=None, *, grad_output=None, need_input_grad: bool = False) -> Backprop:
        """Model.train_batch, its batch split over the workers; everything is checked before."""
        model = self.model
        x, targets, grad_output = model.validate_batch(x, targets, grad_output)
        if self.workers is None:
            self.workers = self._workers()
        k = min(len(self.workers), len(x))  # no empty shard
        parts = [np.array_split(a, k) if a is not None else [None] * k for a in (x, targets, grad_output)]
        key, params = (model.spec["id"], self.incarnation, model.version), [self._parameters_ref()]
        calls = [worker.shard.remote(key, params, model.spec, xi, ti, gi, need_input_grad)
                 for worker, xi, ti, gi in zip(self.workers, *parts)]
        try:
            shards: list[Shard] = ray.get(calls)
        except RayActorError:
            # A worker's node may be gone, and a worker is pinned to its node: the next batch
            # places them all again on the nodes alive then. This one answers 503
            # model_unavailable (nothing was added), to be retried.
            for worker in self.workers:
                ray.kill(worker, no_restart=True)
            self.workers = None
            raise
        return model.add_shards(shards)

    # Core's own methods, whose batch is this train_batch: train_step checks lr first, steps
    # with the model's own step (once, here) and, if the step is refused, leaves the model as it was.
    def forward_backward(self, x, targets=None, *, grad_output=None) -> float | None:
        return Model.forward_backward(self, x, targets, grad_output=grad_output)

    def train_step(self, x, targets, lr: float | None = None) -> TrainStepResult:
        return Model.train_step(self, x, targets, lr)

    def _workers(self) -> list[Any]:
        """Gives the handles of workers 0..k-1, created where they are not: worker i on the
        i-th node alive (mod the nodes). Pinned (a hard node affinity): with "SPREAD", or a soft
        affinity, Ray put two workers of two on one node of two, one time in three."""
        from service.cluster import _actor  # cluster imports this module

        nodes = sorted(node["NodeID"] for node in ray.nodes() if node["Alive"])
        return [_actor(ShardWorker, f"worker-{i}", self.settings.ray_namespace,
                       scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=False))
                .remote(self.settings) for i in range(self.model.spec["workers"])]

    def _parameters_ref(self) -> Any:
        """Gives the object-store reference of this version's parameters, put there once."""
        version = self.model.version
        if self._shipped is None or self._shipped[0] != version:
            self._shipped = (version, ray.put(self.model.parameters()))
        return self._shipped[1]


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

    def _replica(self, key: tuple[str, str], spec: dict) -> Replica:
        with self.lock:
            replica = self.replicas.pop(key, None) or Replica(Model.from_spec(spec))
            self.replicas[key] = replica
            while len(self.replicas) > REPLICAS:
                self.replicas.popitem(last=False)
            return replica

    def ping(self) -> str:
        return self.node
