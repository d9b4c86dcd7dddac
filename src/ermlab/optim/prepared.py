"""A step prepared once and replayed: the fused kernels' calls of the last step, made
again while nothing they were made from has changed.

``InPlaceOptimizer.step`` finds, for every parameter, its state and this step's scalars,
checks which arrays the fused kernels can take, lays the parameters out in blocks and
lanes, asks each rule for its kernel's arguments and calls each block's kernel
(``optim.inplace``). Over the 784-512-256-10 MLP's six tensors that Python took 18 µs of
plain SGD's step with its arrays in cache; in a step that has just streamed 6 MB through
the caches it took 27 µs (AMD EPYC VM, 1 thread: steps of 97 µs whose kernels alone
took 69 µs), more than a third of the kernels' own time.

Where the last step ran every block's kernel and flushed nothing, ``step``
keeps a ``PreparedStep``: each parameter with the arrays and state its blocks were made
from, each group's hyperparameters (a copy of its values), and each block's kernel
arrays in the order they ran. The next step replays it if, before anything is changed,

* the optimizer's settings (``threads``, ``fused``, ``flush_every``, ``flush_below``),
  the fused kernels in use (``ERMLAB_FUSED`` is read again) and the parameter groups
  (the same dicts, holding the same parameters) are as they were;
* every parameter has the same ``data`` and ``grad`` arrays (``grad`` is read through
  the property, so a gradient that ``zero_grad`` left to be cleared is cleared), the
  same state dict holding the same arrays; and
* no parameter is due to flush state arrays it holds this step (``flush_now``).

A group whose hyperparameters changed (a learning rate that a schedule sets at every
step) is asked again what the full step asks of it (whether it takes the kernels, their
array arguments, what it flushes); where it cannot be, the full step runs.

Then it counts each parameter's step, asks the rule for its ``scalars`` as ``step``
does (where that makes a state array, the step goes on on the full path), takes the
kernel's scalar arguments from ``fused_kernel`` once per group and dtype where they differ from
the last step's (Adam's bias corrections change every step; plain SGD's arguments
stay) and calls each block's kernel with its kept arrays: the same calls, with the
same arguments, in the same order as ``step`` would make, so results are bit for bit
the same. Anything else (a flushing step, a new state array, a replaced gradient,
another lane count) takes ``step``'s full path, which prepares the next replay. With
several threads the lane tuner (``threads.LaneTuner``) is still asked each step and
timed, and a replay runs only where it chose the lane count the replay was made with;
its lanes run as ``step`` runs them (``threads.run_lanes``, the calling thread's first
kernel handing the worker its lane).

Hyperparameters are compared by value: a group holding anything but numbers, strings,
None and tuples of these (a list or an array that could change in place) is never
replayed.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy

from ermlab.threads import Handoff, run_lanes

_PLAIN = (bool, int, float, str, type(None), numpy.number, numpy.bool_)


def plain_values(group: dict[str, Any], last: dict[str, Any] | None = None
                 ) -> dict[str, Any] | None:
    """A copy of the group's hyperparameters (its ``params`` as a list), or None where one
    is not a number, string, None or tuple of these (it could change in place unseen);
    values that are the objects in ``last`` (an earlier copy) are not looked at again."""
    values = dict(group)
    values["params"] = list(group["params"])
    last = {} if last is None else last
    for key, value in group.items():
        if key != "params" and value is not last.get(key, _MISSING) and not (
                isinstance(value, _PLAIN) or (
                    type(value) is tuple and all(isinstance(v, _PLAIN) for v in value))):
            return None
    return values


_MISSING = object()


def _state_arrays(state: dict[str, Any]) -> tuple[int, ...]:
    return tuple([id(v) for v in state.values() if type(v) is numpy.ndarray])


class PreparedStep:
    """The last full step's kernel calls (see the module docstring). ``run(opt)`` replays
    them and returns True, or changes nothing and returns False where ``opt.step`` must
    take its full path."""

    __slots__ = ("settings", "groups", "params", "held", "calls", "lanes", "flats", "tuned")

    def __init__(self, opt: Any, tasks: list[tuple], calls: list[tuple],
                 lanes: list[list[tuple[int, tuple]]], flats: list[list[dict[str, Any]]],
                 tuned: tuple | None) -> None:
        """``tasks`` and ``calls``: the full step's, one per parameter in group order;
        ``lanes``: each lane's blocks as (task index, kernel arrays) in the order they ran,
        the calling thread's first; ``flats``: each block's flat arrays by name
        (``Block.kernel_arrays``), the kernel arrays' source; ``tuned``: the lane tuner's
        (key, lanes) where it chose this step's lane count, else None."""
        self.settings = (opt.threads, opt.fused, opt.flush_every, opt.flush_below)
        groups = list(opt.param_groups)
        self.groups = [(group, plain_values(group)) for group in groups]
        index = {id(group): k for k, group in enumerate(groups)}
        # per parameter: (param, its data, grad and state, the state's arrays, the state's
        # size, its group's index)
        self.params = [(param, param.data, param.grad, state, _state_arrays(state), len(state),
                        index[id(group)]) for param, group, state, _, _ in tasks]
        # what the ids above name, kept alive so that no id is reused while this is kept
        self.held = [tuple(state.values()) for _, _, state, _, _ in tasks]
        # per group and dtype: (scalars, call) of the last step's first such parameter (a
        # kernel and its scalar arguments are those of one dtype)
        self.calls: dict[tuple[int, Any], tuple[Any, tuple]] = {}
        for (param, _, _, scalars, _), call, (*_, k) in zip(tasks, calls, self.params):
            self.calls.setdefault((k, param.data.dtype), (scalars, call))
        self.lanes, self.flats = lanes, flats
        self.tuned = tuned

    def _renew(self, opt: Any, changed: list[int]) -> bool:
        """Take the new hyperparameters of the groups ``changed`` (a learning rate set by a
        schedule at every step): their kernels' array arguments (``fused_arrays``, which
        may depend on them) and scalar arguments (asked again this step), as the full step
        would (what is flushed is asked at each due step); False where the full step must
        run (other parameters, a group now on the NumPy path, arrays the kernel now wants
        that are not there yet)."""
        for k in changed:
            group = opt.param_groups[k]
            values = plain_values(group, self.groups[k][1])
            if (values is None or values["params"] != self.groups[k][1]["params"]
                    or not opt._fused_group(group)):
                return False
            self.groups[k] = (group, values)
        self.calls = {key: call for key, call in self.calls.items() if key[0] not in changed}
        try:
            for lane, flats in zip(self.lanes, self.flats):
                for b, ((i, _), arrays) in enumerate(zip(lane, flats)):
                    k = self.params[i][6]
                    if k in changed:
                        lane[b] = (i, opt.fused_arrays(arrays, opt.param_groups[k]))
        except (KeyError, TypeError):  # a state array the rule now needs, not made yet
            return False
        return True

    def usable(self) -> bool:
        """Whether every group's values could be kept (``plain_values``)."""
        return all(values is not None for _, values in self.groups)

    def run(self, opt: Any, kernels: Any) -> bool:
        """Replay the step on ``opt`` where nothing it was made from has changed;
        ``kernels``: ``optim._kernels``, None where they are off (``ERMLAB_FUSED=0``)."""
        if (kernels is None
                or (opt.threads, opt.fused, opt.flush_every, opt.flush_below) != self.settings
                or len(opt.param_groups) != len(self.groups)):
            return False
        changed = []
        try:
            for k, (group, (kept, values)) in enumerate(zip(opt.param_groups, self.groups)):
                if group is not kept:
                    return False
                if group != values:
                    changed.append(k)
        except (ValueError, TypeError):  # a value that does not compare (an array)
            return False
        if changed and not self._renew(opt, changed):
            return False
        states, groups = opt.state, opt.param_groups
        for param, data, grad, state, arrays, _, k in self.params:
            if (param.data is not data or param.grad is not grad
                    or states.get(param) is not state or _state_arrays(state) != arrays):
                return False
            if opt.flush_now(groups[k], state, data.dtype, state["step"] + 1):
                return False  # this step would flush arrays the state holds
        if self.tuned is not None:
            key, lanes = self.tuned
            if opt._lane_tuner.choose(key, lanes) != len(self.lanes):
                return False
        # nothing has changed: count the step and make its calls
        calls: dict[tuple[int, Any], tuple[Any, tuple]] = {}
        per_param, grown = [], False
        for param, data, _, state, _, size, k in self.params:
            state["step"] += 1
            group = groups[k]
            scalars = opt.scalars(param, group, state)
            grown = grown or len(state) != size  # a state array made now (``scalars``)
            key = (k, data.dtype)
            call = calls.get(key)
            if call is None or not _equal(call[0], scalars):  # the first of its kind, or others
                last = self.calls.get(key)
                if last is not None and _equal(last[0], scalars):
                    call = last
                else:
                    call = (scalars, opt.fused_kernel(kernels, group, scalars, data.dtype))
                calls[key] = call
            per_param.append((scalars, call[1]))
        if grown:  # the step, its steps counted and scalars found, on the full path
            opt._run([(param, groups[k], state, scalars,
                       opt.flush_now(groups[k], state, param.data.dtype))
                      for (param, _, _, state, _, _, k), (scalars, _)
                      in zip(self.params, per_param, strict=True)],
                     opt.threads, prepare=True)
            return True
        self.calls = calls
        start = time.perf_counter()
        if len(self.lanes) == 1:
            _lane(per_param, self.lanes[0])
        else:  # as ``InPlaceOptimizer._run``: the calling lane's first kernel posts the next
            run_lanes([partial(_lane, per_param, blocks) for blocks in self.lanes],
                      blas=False, handoff=True)
        if self.tuned is not None:
            opt._lane_tuner.record(time.perf_counter() - start)
        return True


def _lane(per_param: list[tuple], blocks: list[tuple[int, tuple]],
          handoff: Handoff | None = None) -> None:
    """One lane's kernel calls; the first posts ``handoff`` (``threads.Handoff``)."""
    post = () if handoff is None else (handoff.signal, handoff.value)
    for i, arrays in blocks:
        kernel, scalars = per_param[i][1]
        kernel(*arrays, *scalars, *post)
        post = ()


def _equal(a: Any, b: Any) -> bool:
    """Whether two steps' scalars are equal (as Python values; False where they do not
    compare)."""
    try:
        return bool(a == b)
    except (ValueError, TypeError):
        return False
