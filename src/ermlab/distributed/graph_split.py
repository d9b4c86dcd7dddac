"""Model parallelism by graph split: one ``nn.Graph`` cut into per-device subgraphs.

TensorFlow's rule (Abadi et al. 2015, "TensorFlow: Large-Scale Machine
Learning on Heterogeneous Distributed Systems", §3.2.2): once every box is
placed on a device, each edge ``a → b`` whose ends lie on different devices
is replaced by a pair of boxes, a *Send* on a's device and a *Receive* on b's
device; nothing else crosses a device boundary. Here that gives, for a value
v produced in partition P and read in partition Q ≠ P:

    fprop:  Send_P(v)  ──v (a copy, as over a wire)──▶  Receive_Q → v
    bprop:  Receive_Q  ──∂L/∂v|_Q (a copy)──▶  Send_P;   ∂L/∂v = Σ_Q ∂L/∂v|_Q + ∂L/∂v|_P

so a value read in several partitions (fan-out across devices) gets the sum of
the gradients of all its readers — the multivariate chain rule, as in
``nn.Graph``. One Send/Receive pair carries v to each partition that reads it
(v is sent once per reading partition, whatever the number of its boxes there).

Each partition is an object of its own (``Partition``) holding a sub-``Graph``
of its boxes: its inputs are the graph inputs and the values it receives, its
output is a Send box (``_Send``) that packs every value another partition (or the
caller) needs. Only arrays pass between partitions, each one copied, and the
bytes are counted (``SplitGraph.traffic``).

``placement="ray"`` puts each partition in a Ray actor (``PartitionActor``):
activations and gradients then pass from actor to actor as object references
(the driver holds references only); each actor counts the bytes it receives
(forward) and sends back (backward) from and to other partitions, so
``traffic`` and ``bytes_per_step`` hold them as in process. Trained by a plain
Trainer, the driver's Parameters stay the ones its optimizer updates, so each
forward also carries a partition's weights in and each backward its parameter
gradients out. With ``strategy=ActorUpdates()`` the actors own their
parameters: each runs its share of the optimizer step, and only activations
and their gradients travel.

Partitions run one after the other in an order where every partition comes
after the partitions it receives from. An assignment where two partitions
would have to send data to each other (P needs something of Q and Q something
of P) cannot run as one fprop per partition; it is refused with a ValueError
before anything runs.

Example — a residual block on two devices:
    >>> from ermlab import nn
    >>> from ermlab.distributed import SplitGraph
    >>> g = nn.Graph(inputs="x")
    >>> _ = g.add("fc1", nn.Linear(8, 8), "x").add("act1", nn.ReLU(), "fc1")
    >>> _ = g.add("fc2", nn.Linear(8, 8), "act1").add("sum", nn.Add(), ["fc2", "x"])
    >>> _ = g.add("out", nn.ReLU(), "sum").set_output("out")
    >>> model = SplitGraph(g, [["fc1", "act1"], ["fc2", "sum", "out"]])
    >>> model = SplitGraph(g, devices={"fc1": 0, "act1": 0, "fc2": 1, "sum": 1, "out": 1})
    >>> model = SplitGraph(g, n_partitions=2)     # contiguous, balanced by parameter count
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.distributed.base import Strategy
from ermlab.distributed.inprocess import clone_optimizer, refuse_closure_optimizers
from ermlab.nn.graph import Graph
from ermlab.nn.module import Module


class _Send(Module):
    """The sending end of a partition: packs the values leaving it into one tuple.

    fprop: (v₁, …, vₖ) ↦ (v₁, …, vₖ);  bprop: (g₁, …, gₖ) ↦ (g₁, …, gₖ).
    """

    def forward(self, *values: Any) -> tuple:
        return values

    def grad_input(self, grad_out: Sequence[Any]) -> Any:
        return grad_out[0] if len(grad_out) == 1 else tuple(grad_out)


def _wire(array: Any) -> Any:
    """An array as it arrives on the far side of a wire: a copy, never a shared buffer."""
    return array_module(array).array(array, copy=True)


class Partition:
    """The boxes placed on one device, as a sub-``Graph`` ending in a ``Send`` box.

    Attributes:
        device: the device label (the partition's index, or the value in ``devices``).
        boxes: its box names, in the whole graph's topological order.
        receives: the values it reads that come from elsewhere (graph inputs and
            other partitions' boxes), in the order of ``graph.input_names``.
        sends: the values it produces that another partition or the caller reads.
        graph: the sub-``Graph`` (same modules as the original boxes).
    """

    def __init__(self, device: Hashable, boxes: list[str], whole: Graph,
                 receives: list[str], sends: list[str]) -> None:
        self.device, self.boxes = device, boxes
        self.receives, self.sends = receives, sends
        self.graph = Graph(inputs=receives)
        for name in boxes:
            self.graph.add(name, whole._modules[name], whole.edges[name])
        send = "send"
        while send in self.graph.edges or send in receives:
            send += "_"
        self.graph.add(send, _Send(), sends).set_output(send)

    def forward(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """fprop of the subgraph on received values; returns ``{sent value: array}``."""
        return dict(zip(self.sends, self.graph.forward(*(values[n] for n in self.receives))))

    def backward(self, grads: Mapping[str, Any], input_grad: bool) -> dict[str, Any]:
        """bprop on the gradients of the sent values; returns ``{received value: gradient}``."""
        back = self.graph.backward(tuple(grads[n] for n in self.sends), input_grad=input_grad)
        if not input_grad:
            return {}
        back = (back,) if len(self.receives) == 1 else back
        return dict(zip(self.receives, back))

    def num_parameters(self) -> int:
        return self.graph.num_parameters()


class PartitionActor:
    """A partition living in a Ray actor (``ray.remote`` wraps this plain class at start).

    Two ways to train it. By default the driver's Parameters stay the truth the
    optimizer updates: each ``forward`` carries the partition's current weights in,
    each ``backward`` carries its parameter gradients out (added into the driver's
    ``grad``). Once ``own`` hands it the optimizer and regularizer (``ActorUpdates``),
    the actor's parameters are the truth: forwards carry no weights, gradients stay
    here and ``step`` updates them. Either way activations and their gradients go
    from actor to actor as Ray object references, and each call also returns the
    bytes it received from (forward) or sent back to (backward) other partitions.
    """

    def __init__(self, partition: Partition, inputs: Sequence[str] = ()) -> None:
        self.part = partition
        self.params = dict(partition.graph.named_parameters())
        for param in self.params.values():  # Ray hands arrays over read-only
            param.data = param.data.copy()
            param.grad = array_module(param.data).zeros_like(param.data)
        self.inputs = set(inputs)
        self.optimizer: Any = None
        self.regularizer: Any = None

    def forward(self, weights: dict[str, Any], training: bool, *values: Any) -> tuple:
        for name, array in weights.items():
            self.params[name].data[...] = array
        self.part.graph.train(training)
        received = dict(zip(self.part.receives, values))
        moved = sum(v.nbytes for name, v in received.items() if name not in self.inputs)
        sent = self.part.forward(received)
        return (*(sent[name] for name in self.part.sends), moved)

    def backward(self, counts: list[int], *grads: Any) -> tuple:
        """``counts[i]`` gradients of ``sends[i]`` (one per reading partition), summed here;
        returns (parameter gradients, or None when this actor owns them; the gradient of
        each received value; bytes of those sent back to other partitions)."""
        for param in self.params.values():
            param.zero_grad()
        summed, start = {}, 0
        for name, count in zip(self.part.sends, counts):
            summed[name] = sum(grads[start + 1:start + count], grads[start])
            start += count
        back = self.part.backward(summed, input_grad=True)
        moved = sum(back[name].nbytes for name in self.part.receives if name not in self.inputs)
        param_grads = None if self.optimizer is not None else {
            name: param.grad for name, param in self.params.items()}
        return (param_grads, *(back[name] for name in self.part.receives), moved)

    def own(self, weights: dict[str, Any], optimizer: Any, regularizer: Any) -> None:
        """From now on the parameters live here: ``weights`` loaded, ``optimizer`` (a copy
        over the driver's parameters of this partition, in order) re-pointed at ours."""
        for name, array in weights.items():
            self.params[name].data[...] = array
        theirs = [p for group in optimizer.param_groups for p in group["params"]]
        self.optimizer = copy.deepcopy(optimizer, {id(p): q for p, q
                                                   in zip(theirs, self.params.values())})
        self.regularizer = regularizer

    def step(self, lr: Any) -> None:
        """λ∇Ω, the optimizer step, the constraint — ``Trainer.apply_update`` on this shard."""
        params = list(self.params.values())
        if lr is not None:
            self.optimizer.param_groups[0]["lr"] = lr
        if self.regularizer is not None:
            self.regularizer.add_gradient(params)
        self.optimizer.step()
        if hasattr(self.regularizer, "apply"):
            self.regularizer.apply(params)

    def penalty(self) -> float:
        return float(self.regularizer.penalty(list(self.params.values())))

    def state(self) -> tuple[dict[str, Any], list[Any]]:
        """(θ, the optimizer state of each parameter in order, or None) — back to the driver."""
        states = [None if self.optimizer is None else self.optimizer.state.get(p)
                  for p in self.params.values()]
        return {name: p.data for name, p in self.params.items()}, states

    def grads(self) -> dict[str, Any]:
        return {name: param.grad for name, param in self.params.items()}

    def disown(self) -> None:
        self.optimizer = self.regularizer = None


class SplitGraph(Module):
    """An ``nn.Graph`` split into partitions joined by Send/Receive pairs; a drop-in Module.

    Give exactly one of:
        partitions: a list of groups of box names, one group per device.
        devices: ``{box name: device}``; boxes with the same device form a partition.
        n_partitions: cut the topological order into this many contiguous pieces
            whose largest parameter count is as small as possible (contiguous pieces
            of a topological order only ever send data forward).

    Every box the output depends on must be placed exactly once; boxes placed that
    the output does not need are ignored. A module used by boxes in two different
    partitions (weight sharing across devices) is refused: its parameters would
    live in two places.

    ``forward``/``backward``/``parameters``/``state_dict`` behave as the unsplit
    graph's (same parameter names), so ``Trainer(SplitGraph(g, ...), ...)`` trains
    it unchanged. ``traffic`` holds the bytes sent between partitions by the last
    ``forward`` (activations) and ``backward`` (gradients); ``report()`` prints them.

    The forward cache is each partition's sub-Graph cache (``cache_state()``), so a
    SplitGraph may be called at several sites like any Module. With
    ``placement="ray"`` the caches live in the actors: a backward follows the
    latest forward.
    """

    forward_cache = ("_sites", "_inputs_like")

    def __init__(self, graph: Graph, partitions: Sequence[Sequence[str]] | None = None, *,
                 devices: Mapping[str, Hashable] | None = None,
                 n_partitions: int | None = None, placement: str = "process") -> None:
        super().__init__()
        if placement not in ("process", "ray"):
            raise ValueError(f"placement must be 'process' or 'ray'; got {placement!r}")
        if not isinstance(graph, Graph):
            raise TypeError(f"SplitGraph splits an nn.Graph; got {type(graph).__name__}")
        given = [partitions is not None, devices is not None, n_partitions is not None]
        if sum(given) != 1:
            raise ValueError("SplitGraph needs exactly one of partitions=, devices=, "
                             f"n_partitions=; got {sum(given)}")
        order = graph.order()
        if devices is not None:
            labels, groups = _groups_from_devices(devices, graph)
        elif n_partitions is not None:
            groups = _balanced_groups(graph, order, n_partitions)
            labels = list(range(len(groups)))
        elif isinstance(partitions, str):
            raise ValueError("partitions must be a list of groups of box names; got the string "
                             f"{partitions!r} (write [[{partitions!r}]])")
        else:
            groups = [group if isinstance(group, str) else list(group) for group in partitions]
            labels = list(range(len(groups)))
        where = _check_groups(graph, order, groups)
        object.__setattr__(self, "graph", graph)
        object.__setattr__(self, "partitions", _build(graph, order, groups, labels, where))
        object.__setattr__(self, "traffic", {"forward": 0, "backward": 0})
        object.__setattr__(self, "placement", placement)
        object.__setattr__(self, "_actors", None)
        object.__setattr__(self, "_owned", False)
        if placement == "ray" and any(True for _ in graph.named_buffers()):
            raise ValueError("placement='ray' does not carry buffers (batch-norm running "
                             "statistics) back from the actors; use placement='process'")
        self.train(graph.training)

    # -- the two passes -----------------------------------------------------------

    def forward(self, *inputs: Any) -> Any:
        graph = self.graph
        if len(inputs) != len(graph.input_names):
            raise ValueError(f"SplitGraph expects {len(graph.input_names)} inputs "
                             f"{graph.input_names}; got {len(inputs)}")
        if self.placement == "ray":
            return self._forward_ray(inputs)
        values = dict(zip(graph.input_names, inputs))
        sent, sites = 0, []
        for part in self.partitions:
            mine = {}
            for name in part.receives:
                if name in graph.input_names:
                    mine[name] = values[name]
                else:
                    mine[name] = _wire(values[name])
                    sent += mine[name].nbytes
            values.update(part.forward(mine))
            sites.append(part.graph.cache_state())
        if self.training:
            self._sites, self._inputs_like = sites, [(x.shape, x.dtype) for x in inputs]
        self.traffic["forward"] = sent
        self.traffic["backward"] = 0
        return values[graph.output_name]

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        if self.placement == "ray":
            return self._backward_ray(grad_out, input_grad)
        graph = self.graph
        grads: dict[str, Any] = {graph.output_name: grad_out}
        sent = 0
        for part, site in zip(reversed(self.partitions), reversed(self._cached("_sites"))):
            part.graph.restore_cache(site)
            wants = input_grad or any(n not in graph.input_names for n in part.receives)
            back = part.backward(grads, input_grad=wants)
            for name, grad in back.items():
                if name in graph.input_names:
                    if not input_grad:
                        continue
                else:
                    grad = _wire(grad)
                    sent += grad.nbytes
                grads[name] = grad if name not in grads else grads[name] + grad
        self.traffic["backward"] = sent
        if not input_grad:
            return None
        xp = array_module(grad_out)
        result = tuple(
            grads[name] if name in grads else xp.zeros(shape, dtype=dtype)
            for name, (shape, dtype) in zip(graph.input_names, self._cached("_inputs_like")))
        return result[0] if len(result) == 1 else result

    # -- Ray placement: each partition an actor ------------------------------------

    def _start_actors(self) -> list[Any]:
        from ermlab.distributed.ray_backend import import_ray

        ray = import_ray()
        if not ray.is_initialized():
            raise RuntimeError("SplitGraph(placement='ray') needs a running Ray: call "
                               "ray.init(...) (or run under OnRay) before the first forward")
        remote = ray.remote(num_cpus=0, max_restarts=0)(PartitionActor)
        actors = [remote.remote(part, self.graph.input_names) for part in self.partitions]
        object.__setattr__(self, "_actors", actors)
        return actors

    def _forward_ray(self, inputs: tuple) -> Any:
        import ray

        actors = self._actors or self._start_actors()
        values: dict[str, Any] = dict(zip(self.graph.input_names, inputs))
        moved = []
        for part, actor in zip(self.partitions, actors):
            weights = {} if self._owned else {name: p.data
                                              for name, p in part.graph.named_parameters()}
            refs = actor.forward.options(num_returns=len(part.sends) + 1).remote(
                weights, self.training, *(values[name] for name in part.receives))
            values.update(zip(part.sends, refs[:-1]))
            moved.append(refs[-1])
        if self.training:
            self._inputs_like = [(x.shape, x.dtype) for x in inputs]
        output = ray.get(values[self.graph.output_name])
        self.traffic["forward"] = int(sum(ray.get(moved)))
        self.traffic["backward"] = 0
        return output

    def _backward_ray(self, grad_out: Any, input_grad: bool) -> Any:
        import ray

        graph = self.graph
        grads: dict[str, list[Any]] = {graph.output_name: [grad_out]}
        pending, moved = [], []
        for part, actor in zip(reversed(self.partitions), reversed(self._actors)):
            lists = [grads.pop(name) for name in part.sends]
            refs = actor.backward.options(num_returns=2 + len(part.receives)).remote(
                [len(g) for g in lists], *(g for group in lists for g in group))
            pending.append((part, refs[0]))
            moved.append(refs[-1])
            for name, ref in zip(part.receives, refs[1:-1]):
                grads.setdefault(name, []).append(ref)
        if not self._owned:
            for part, ref in pending:
                params = dict(part.graph.named_parameters())
                for name, grad in ray.get(ref).items():
                    params[name].grad += grad
        self.traffic["backward"] = int(sum(ray.get(moved)))
        if not input_grad:
            return None
        like = self._cached("_inputs_like")
        result = tuple(sum(ray.get(grads[name])) if name in grads
                       else array_module(grad_out).zeros(shape, dtype=dtype)
                       for name, (shape, dtype) in zip(graph.input_names, like))
        return result[0] if len(result) == 1 else result

    @property
    def bytes_per_step(self) -> int:
        """Bytes between partitions in the last training step: activations forward plus
        their gradients backward (parameters and their gradients never travel once the
        actors own them: ``ActorUpdates``)."""
        return self.traffic["forward"] + self.traffic["backward"]

    # -- parameters owned by the actors (ActorUpdates) ------------------------------

    def own(self, optimizer: Any, regularizer: Any = None) -> None:
        """Hand each partition actor its parameters' values, a copy of ``optimizer`` over
        them (with their state so far) and the regularizer; from now on they live there."""
        import ray

        actors = self._actors or self._start_actors()
        calls = []
        for part, actor in zip(self.partitions, actors):
            named = dict(part.graph.named_parameters())
            clone = clone_optimizer(optimizer, list(named.values()))
            clone.state = {p: optimizer.state[p] for p in named.values() if p in optimizer.state}
            weights = {name: p.data for name, p in named.items()}
            calls.append(actor.own.remote(weights, clone, regularizer))
        ray.get(calls)
        object.__setattr__(self, "_owned", True)

    def actor_step(self, lr: Any) -> None:
        """Every actor's update on the gradients of the last backward."""
        import ray

        ray.get([actor.step.remote(lr) for actor in self._actors])

    def actor_penalty(self) -> float:
        import ray

        return float(sum(ray.get([actor.penalty.remote() for actor in self._actors])))

    def actor_grads(self) -> dict[str, Any]:
        """The parameter gradients of the last backward, as the actors hold them."""
        import ray

        return {name: grad for grads in ray.get([a.grads.remote() for a in self._actors])
                for name, grad in grads.items()}

    def fetch(self, optimizer: Any = None) -> None:
        """The actors' θ (and ``optimizer``'s per-parameter state) into the driver's copies."""
        import ray

        for part, (arrays, states) in zip(self.partitions,
                                          ray.get([a.state.remote() for a in self._actors])):
            for (name, param), state in zip(part.graph.named_parameters(), states):
                numpy.copyto(param.data, arrays[name])
                if optimizer is not None and state is not None:
                    optimizer.state[param] = copy.deepcopy(state)

    def disown(self, optimizer: Any = None) -> None:
        """``fetch``, then the driver's parameters are the truth again."""
        if self._owned and self._actors:
            import ray

            self.fetch(optimizer)
            ray.get([a.disown.remote() for a in self._actors])
        object.__setattr__(self, "_owned", False)

    def close(self) -> None:
        """Stop the partition actors (placement='ray'); the next forward starts new ones."""
        if self._actors:
            import ray

            for actor in self._actors:
                ray.kill(actor)
        object.__setattr__(self, "_actors", None)
        object.__setattr__(self, "_owned", False)

    # -- the Module face: the unsplit graph's parameter names ---------------------

    def named_modules(self, prefix: str = "",
                      _seen: set[int] | None = None) -> Iterator[tuple[str, Module]]:
        """Each box module under its name in the unsplit graph; the sub-Graphs as ``partitionK``."""
        seen = set() if _seen is None else _seen
        if id(self) in seen:
            return
        seen.add(id(self))
        yield prefix, self
        join = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
        for index, part in enumerate(self.partitions):
            seen.add(id(part.graph))
            yield join(f"partition{index}"), part.graph
        for part in self.partitions:
            for name in part.boxes:
                yield from part.graph._modules[name].named_modules(join(name), seen)

    def report(self) -> str:
        """One line per partition (device, boxes, parameters) and the bytes of the last step."""
        lines = [f"partition {k} on device {p.device!r}: {len(p.boxes)} boxes, "
                 f"{p.num_parameters()} parameters, receives {p.receives}, sends {p.sends}"
                 for k, p in enumerate(self.partitions)]
        lines.append(f"bytes sent per step: {self.traffic['forward']} forward (activations) + "
                     f"{self.traffic['backward']} backward (gradients)")
        return "\n".join(lines)

    def extra_repr(self) -> str:
        return f"partitions={[p.boxes for p in self.partitions]}"


def _groups_from_devices(devices: Mapping[str, Hashable],
                         graph: Graph) -> tuple[list[Hashable], list[list[str]]]:
    labels: list[Hashable] = []
    groups: dict[Hashable, list[str]] = {}
    for box, device in devices.items():
        if device not in groups:
            labels.append(device)
            groups[device] = []
        groups[device].append(box)
    return labels, [groups[label] for label in labels]


def _balanced_groups(graph: Graph, order: list[str], n: int) -> list[list[str]]:
    """Contiguous pieces of ``order`` minimising the largest parameter count (exact DP)."""
    if not isinstance(n, int) or not 1 <= n <= len(order):
        raise ValueError(f"n_partitions must be an integer in [1, {len(order)}] (the number "
                         f"of boxes the output needs); got {n!r}")
    seen: set[int] = set()
    weights = []
    for name in order:
        params = [p for p in graph._modules[name].parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        weights.append(sum(p.size for p in params))
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    # best[k][i]: smallest largest-piece weight cutting order[:i] into k pieces.
    best = [[inf] * (len(order) + 1) for _ in range(n + 1)]
    cut = [[0] * (len(order) + 1) for _ in range(n + 1)]
    best[0][0] = 0
    for k in range(1, n + 1):
        for i in range(k, len(order) + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    bounds, i = [], len(order)
    for k in range(n, 0, -1):
        bounds.append((cut[k][i], i))
        i = cut[k][i]
    return [order[a:b] for a, b in reversed(bounds)]


def _check_groups(graph: Graph, order: list[str], groups: list[list[str]]) -> dict[str, int]:
    """``{box: partition index}`` after checking the groups; a one-line ValueError otherwise."""
    if not groups:
        raise ValueError("SplitGraph needs at least one partition; got none")
    where: dict[str, int] = {}
    for index, group in enumerate(groups):
        if isinstance(group, str):
            raise ValueError(f"partition {index} must be a list of box names; got the string "
                             f"{group!r} (write [{group!r}])")
        if not group:
            raise ValueError(f"partition {index} is empty: every partition needs at least one box")
        for box in group:
            if box not in graph.edges:
                raise ValueError(f"partition {index} names {box!r}, which is not a box of the "
                                 f"graph; its boxes are {sorted(graph.edges)}")
            if box in where:
                raise ValueError(f"box {box!r} is in partitions {where[box]} and {index}: "
                                 "place each box in exactly one partition")
            where[box] = index
    missing = [box for box in order if box not in where]
    if missing:
        raise ValueError(f"boxes {missing} are in no partition: place every box the output "
                         "needs")
    needed = set(order)
    for index, group in enumerate(groups):
        if not any(box in needed for box in group):
            raise ValueError(f"partition {index} holds only boxes the output does not need "
                             f"({group}); drop it")
    owner: dict[int, str] = {}
    for box in order:
        module = graph._modules[box]
        first = owner.setdefault(id(module), box)
        if where[first] != where[box]:
            raise ValueError(f"boxes {first!r} (partition {where[first]}) and {box!r} (partition "
                             f"{where[box]}) share one module: put boxes that share weights in "
                             "one partition")
    return where


def _build(graph: Graph, order: list[str], groups: list[list[str]], labels: list[Hashable],
           where: dict[str, int]) -> list[Partition]:
    """The partitions, in an order where each comes after every partition it receives from."""
    boxes = [[b for b in order if where[b] == k] for k in range(len(groups))]
    receives: list[list[str]] = [[] for _ in groups]
    sends: list[list[str]] = [[] for _ in groups]
    senders: list[set[int]] = [set() for _ in groups]
    for box in order:
        for value in graph.edges[box]:
            here = where[box]
            if value in where and where[value] == here:
                continue
            if value not in receives[here]:
                receives[here].append(value)
            if value in where:
                senders[here].add(where[value])
                if value not in sends[where[value]]:
                    sends[where[value]].append(value)
    out = graph.output_name
    if out in where and out not in sends[where[out]]:
        sends[where[out]].append(out)
    running: list[int] = []
    while len(running) < len(groups):
        ready = [k for k in range(len(groups)) if k not in running and senders[k] <= set(running)]
        if not ready:
            raise ValueError(_cycle_message(senders, running, groups))
        running.append(ready[0])
    return [Partition(labels[k], boxes[k], graph,
                      sorted(receives[k], key=_input_order(graph, order)), sends[k])
            for k in running]


def _cycle_message(senders: list[set[int]], running: list[int],
                   groups: list[list[str]]) -> str:
    """Name one cycle of partitions, each reading from the next."""
    path, current = [], next(k for k in range(len(groups)) if k not in running)
    while current not in path:
        path.append(current)
        current = min(senders[current] - set(running))
    cycle = [*path[path.index(current):], current]
    return (f"partitions {' <- '.join(map(str, cycle))} read from each other in a cycle "
            "(each reads a value of the next): each partition runs once per pass, so data "
            "must flow one way between partitions; move boxes so that it does, or use "
            "n_partitions= (contiguous in topological order)")


def _input_order(graph: Graph, order: list[str]):
    rank = {name: i for i, name in enumerate([*graph.input_names, *order])}
    return rank.__getitem__


class ActorUpdates(Strategy):
    """Train a ``SplitGraph(placement="ray")`` with each partition's parameters and optimizer
    step kept in its actor: ``Trainer(split, loss, opt, strategy=ActorUpdates())``.

    One step is the Trainer's five lines with the parameters where they live:

        scores = split.forward(x)                 activations actor → actor
        value  = loss(scores, y) + Σ_P λΩ(θ_P)    the penalty summed over the actors
        split.backward(∂loss/∂scores)             gradients actor → actor; ∇θ_P stays in P
        each actor P: λ∇Ω(θ_P); optimizer step on θ_P; constraint

    so only activations and their gradients travel (``split.bytes_per_step``, logged
    per epoch as ``bytes_per_step``). Each actor runs a copy of the Trainer's
    optimizer over its parameters, rebuilt from its hyperparameters (one parameter
    group; per-parameter rules make that the same update as one optimizer over all).
    At each epoch's end, and when ``fit`` ends, θ and the optimizer state come back
    into the Trainer's model and optimizer (validation runs on the actors, which
    hold θ), so checkpoints and a resumed run see them; each ``fit`` hands them over
    again at its first step.
    """

    def bind(self, trainer: Any) -> None:
        model = trainer.model
        if not isinstance(model, SplitGraph) or model.placement != "ray":
            raise ValueError("ActorUpdates trains a SplitGraph(placement='ray'); got "
                             f"{type(model).__name__} — use no strategy for other models")
        refuse_closure_optimizers("ActorUpdates", trainer.optimizer)
        if len(trainer.optimizer.param_groups) != 1:
            raise ValueError("ActorUpdates rebuilds the optimizer per partition and needs one "
                             f"parameter group; {type(trainer.optimizer).__name__} has "
                             f"{len(trainer.optimizer.param_groups)}")

    def train_step(self, trainer: Any, x: Any, y: Any, sample_weight: Any = None) -> float:
        model = trainer.model
        if not model._owned:
            model.own(trainer.optimizer, trainer.regularizer)
        model.train()
        scores = trainer.last_scores = model.forward(x)
        if not bool(array_module(scores).isfinite(scores).all()):
            return float("nan")
        value = trainer.loss.forward(scores, y, sample_weight=sample_weight)
        if trainer.regularizer is not None:
            value += model.actor_penalty()
        if not numpy.isfinite(value):
            return value
        model.backward(trainer.loss.backward(), input_grad=False)
        model.actor_step(trainer.optimizer.param_groups[0].get("lr"))
        trainer.step += 1
        return value

    def epoch_logs(self, trainer: Any) -> dict[str, Any]:
        """θ and the optimizer state into the Trainer; the last step's ``bytes_per_step``."""
        if trainer.model._owned:
            trainer.model.fetch(trainer.optimizer)
        return {"bytes_per_step": trainer.model.bytes_per_step}

    def end_fit(self, trainer: Any) -> None:
        try:
            trainer.model.disown(trainer.optimizer)
        except Exception:  # noqa: BLE001 - the actors are gone (Ray stopped): nothing to fetch
            object.__setattr__(trainer.model, "_owned", False)

    def __repr__(self) -> str:
        return "ActorUpdates()"
