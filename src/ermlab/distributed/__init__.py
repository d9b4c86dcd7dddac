"""Parallel and distributed SGD: strategies that take the place of the Trainer's inner loop.

A strategy is written against a small interface (``pull`` parameters, ``push``
gradients or deltas, ``elastic`` move; :mod:`ermlab.distributed.base`) with an
in-process implementation (:mod:`ermlab.distributed.inprocess`: server and
workers in one process, simulated delays), so the algorithms are tested and
studied without any cluster engine, and a Ray implementation
(:mod:`ermlab.distributed.ray_backend`: ``OnRay(strategy)``, actors) for real runs.

Use: ``Trainer(..., strategy=Downpour(workers=4, n_fetch=1, n_push=4))``.
"""

from ermlab.distributed.actor_pool import reuse_actors
from ermlab.distributed.base import ParameterServer, Pulled, Server, ShardedServer, Strategy
from ermlab.distributed.delay_tolerant import DelayTolerantAdagrad
from ermlab.distributed.downpour import Downpour
from ermlab.distributed.easgd import EASGD
from ermlab.distributed.graph_split import ActorUpdates, SplitGraph
from ermlab.distributed.hogwild import Hogwild
from ermlab.distributed.inprocess import InProcessServer
from ermlab.distributed.ray_backend import OnRay
from ermlab.distributed.sync import SyncDataParallel

# imported the first time they are used: ermlab.distributed.address, ermlab.distributed.hogwild_pool
SUBMODULES = ("address", "hogwild_pool")


def __getattr__(name: str):
    if name in SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ActorUpdates", "DelayTolerantAdagrad", "Downpour", "EASGD", "Hogwild",
           "InProcessServer",
           "OnRay", "ParameterServer", "Pulled", "Server", "ShardedServer", "SplitGraph",
           "Strategy", "SyncDataParallel", "reuse_actors"]
