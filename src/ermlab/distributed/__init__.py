"""Parallel and distributed SGD: strategies that take the place of the Trainer's inner loop.

A strategy is written against a small interface (``pull`` parameters, ``push``
gradients or deltas, ``elastic`` move; :mod:`ermlab.distributed.base`) with an
in-process implementation (:mod:`ermlab.distributed.inprocess`: server and
workers in one process, simulated delays), so the algorithms are tested and
studied without any cluster engine, and a Ray implementation
(:mod:`ermlab.distributed.ray_backend`: ``OnRay(strategy)``, actors) for real runs.

Use: ``Trainer(..., strategy=Downpour(workers=4, n_fetch=1, n_push=4))``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each name is imported from its module the first time it is used, so that a worker
# process (a Hogwild! worker, a Ray actor) imports only the modules it runs.
NAMES = {
    "ActorUpdates": "graph_split", "DelayTolerantAdagrad": "delay_tolerant",
    "Downpour": "downpour", "EASGD": "easgd", "Hogwild": "hogwild",
    "InProcessServer": "inprocess", "OnRay": "ray_backend", "ParameterServer": "base",
    "Pulled": "base", "Server": "base", "ShardedServer": "base", "SplitGraph": "graph_split",
    "Strategy": "base", "SyncDataParallel": "sync", "reuse_actors": "actor_pool",
}
SUBMODULES = ("actor_pool", "address", "allreduce", "base", "delay_tolerant", "downpour",
              "easgd", "graph_split", "hogwild", "hogwild_pool", "inprocess", "ray_backend",
              "ray_workers", "sync")


def __getattr__(name: str) -> Any:
    if name in NAMES:
        return getattr(importlib.import_module(f"{__name__}.{NAMES[name]}"), name)
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *NAMES, *SUBMODULES])


__all__ = sorted(NAMES)
