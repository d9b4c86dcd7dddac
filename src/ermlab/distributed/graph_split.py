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
(the driver holds references only, and the arrays are not counted in
``traffic``); the driver's Parameters stay the ones the optimizer updates, so
each forward carries a partition's weights in and each backward carries its
parameter gradients out.

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

from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

from ermlab.backend import array_module
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

    The driver's Parameters stay the truth the optimizer updates: each ``forward``
    carries the partition's current weights in, each ``backward`` carries its
    parameter gradients out (added into the driver's ``grad``); activations and
    their gradients go from actor to actor as Ray object references.
    """

    def __init__(self, partition: Partition) -> None:
        self.part = partition
        self.params = dict(partition.graph.named_parameters())
        for param in self.params.values():  # Ray hands arrays over read-only
            param.data = param.data.copy()
            param.grad = array_module(param.data).zeros_like(param.data)

    def forward(self, weights: dict[str, Any], training: bool, *values: Any) -> Any:
        for name, array in weights.items():
            self.params[name].data[...] = array
        self.part.graph.train(training)
        sent = self.part.forward(dict(zip(self.part.receives, values)))
        result = tuple(sent[name] for name in self.part.sends)
        return result[0] if len(result) == 1 else result

    def backward(self, counts: list[int], *grads: Any) -> tuple:
        """``counts[i]`` gradients of ``sends[i]`` (one per reading partition), summed here;
        returns (parameter gradients, gradient of each received value)."""
        for param in self.params.values():
            param.zero_grad()
        summed, start = {}, 0
        for name, count in zip(self.part.sends, counts):
            summed[name] = sum(grads[start + 1:start + count], grads[start])
            start += count
        back = self.part.backward(summed, input_grad=True)
        param_grads = {name: param.grad for name, param in self.params.items()}
        return (param_grads, *(back[name] for name in self.part.receives))


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
        actors = [remote.remote(part) for part in self.partitions]
        object.__setattr__(self, "_actors", actors)
        return actors

    def _forward_ray(self, inputs: tuple) -> Any:
        import ray

        actors = self._actors or self._start_actors()
        values: dict[str, Any] = dict(zip(self.graph.input_names, inputs))
        for part, actor in zip(self.partitions, actors):
            weights = {name: p.data for name, p in part.graph.named_parameters()}
            refs = actor.forward.options(num_returns=len(part.sends)).remote(
                weights, self.training, *(values[name] for name in part.receives))
            values.update(zip(part.sends, refs if len(part.sends) > 1 else [refs]))
        if self.training:
            self._inputs_like = [(x.shape, x.dtype) for x in inputs]
        return ray.get(values[self.graph.output_name])

    def _backward_ray(self, grad_out: Any, input_grad: bool) -> Any:
        import ray

        graph = self.graph
        grads: dict[str, list[Any]] = {graph.output_name: [grad_out]}
        pending = []
        for part, actor in zip(reversed(self.partitions), reversed(self._actors)):
            lists = [grads.pop(name) for name in part.sends]
            refs = actor.backward.options(num_returns=1 + len(part.receives)).remote(
                [len(g) for g in lists], *(g for group in lists for g in group))
            pending.append((part, refs[0]))
            for name, ref in zip(part.receives, refs[1:]):
                grads.setdefault(name, []).append(ref)
        for part, ref in pending:
            params = dict(part.graph.named_parameters())
            for name, grad in ray.get(ref).items():
                params[name].grad += grad
        if not input_grad:
            return None
        like = self._cached("_inputs_like")
        result = tuple(sum(ray.get(grads[name])) if name in grads
                       else array_module(grad_out).zeros(shape, dtype=dtype)
                       for name, (shape, dtype) in zip(graph.input_names, like))
        return result[0] if len(result) == 1 else result

    def close(self) -> None:
        """Stop the partition actors (placement='ray'); the next forward starts new ones."""
        if self._actors:
            import ray

            for actor in self._actors:
                ray.kill(actor)
        object.__setattr__(self, "_actors", None)

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
