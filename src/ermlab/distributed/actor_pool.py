"""Keep Ray actors between fits: ``with reuse_actors(): ...``.

Starting a Ray actor starts a Python process: it boots Ray's worker, imports
NumPy and ermlab and connects, ~1 CPU-second a worker (more on a cluster,
where the code is imported on each node). A fit on Ray (``OnRay``) starts its
servers and workers and kills them when it ends — nothing is left behind —
so a search over hyperparameters, or a test suite, that runs many short fits
pays that start again and again, often more than the training itself. Inside
``reuse_actors()`` the actors of a fit that ended are kept instead, emptied
(``reset``: their copy of the model, optimizer and data dropped), and the next
fit that needs actors of the same kind — the same class and the same Ray
options: CPUs, restarts, concurrency — takes them and sets them up for its
own run (``setup``) instead of starting new ones; the others are started as
usual. When the outermost ``reuse_actors`` ends, every kept actor is killed::

    with reuse_actors():
        for lr in (0.01, 0.03, 0.1):
            Trainer(model(), loss, optim.Adagrad(..., lr=lr),
                    strategy=OnRay(Downpour(workers=4))).fit(x, y)   # starts once

What is kept, and what is not:

* only actors of a fit that ended without an error in the strategy (an error
  while Ray runs, a dead worker or Ctrl-C kill them, as outside the pool), and
  only on a Ray the strategy did not start itself (one it started is shut down
  with its actors at the fit's end, as always);
* not a worker that Ray restarted during the fit (it has used up part of its
  ``max_restarts``): it is killed;
* kept actors hold their CPUs while they wait. Before a fit starts new actors
  of one kind, the kept actors of every other kind that hold CPUs are killed,
  so that they never keep a fit's actors from being scheduled.

``reuse_actors(False)`` suspends the pool inside it (its fits start and kill
their own actors); a kept actor that died meanwhile, or one of a Ray that was
shut down and started again, is found when taken (it does not answer) and
replaced by a new one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

ANSWER_SECONDS = 30.0  # a kept actor that does not answer within this is replaced


class ActorPool:
    """The process's kept actors: ``{kind: [handle]}``, kind = (Ray's identity, class name,
    Ray options); ``enabled``: the stack of ``reuse_actors`` flags."""

    def __init__(self) -> None:
        self.idle: dict[tuple, list[Any]] = {}
        self.enabled: list[bool] = []

    @property
    def active(self) -> bool:
        return bool(self.enabled) and self.enabled[-1]

    def take(self, ray: Any, cls: type, options: dict[str, Any], count: int) -> list[Any]:
        """Up to ``count`` kept actors of this kind that answer (the rest the caller starts);
        kept actors of other kinds that hold CPUs are killed first."""
        if not self.active:
            return []
        kind = _kind(ray, cls, options)
        if options.get("num_cpus", 1) > 0:
            for other in list(self.idle):
                if other != kind and dict(other[2]).get("num_cpus", 1) > 0:
                    kill_actors(ray, self.idle.pop(other))
        kept = self.idle.get(kind, [])
        taken, self.idle[kind] = kept[:count], kept[count:]
        alive, dead = _answering(ray, taken)  # dead: or of a Ray that is gone
        kill_actors(ray, dead)
        return alive

    def give_back(self, ray: Any, cls: type, options: dict[str, Any],
                  actors: list[Any]) -> list[Any]:
        """Keep the actors that answer ``reset`` (emptied); returns those not kept."""
        if not self.active or not actors:
            return actors
        kept, rest = _answering(ray, actors)
        self.idle.setdefault(_kind(ray, cls, options), []).extend(kept)
        return rest

    def release(self) -> None:
        """Kill every kept actor."""
        idle, self.idle = self.idle, {}
        if not idle:
            return
        import ray

        for actors in idle.values():
            kill_actors(ray, actors)

    def kept(self) -> int:
        """How many actors are kept now."""
        return sum(len(actors) for actors in self.idle.values())


POOL = ActorPool()


@contextlib.contextmanager
def reuse_actors(enabled: bool = True) -> Iterator[ActorPool]:
    """Keep ``OnRay``'s actors between fits inside the block (module docstring);
    ``enabled=False`` suspends an enclosing one. The kept actors are killed whenever the
    pool stops being in force — the outermost block ends, or a ``reuse_actors(False)``
    begins (kept actors hold CPUs that its fits' own actors need)."""
    _push(bool(enabled))
    try:
        yield POOL
    finally:
        _push(None)


def _push(enabled: bool | None) -> None:
    """Enter (True/False) or leave (None) a block; release the kept actors if the pool was
    in force and no longer is."""
    was = POOL.active
    if enabled is None:
        POOL.enabled.pop()
    else:
        POOL.enabled.append(enabled)
    if was and not POOL.active:
        POOL.release()


def _answering(ray: Any, actors: list[Any]) -> tuple[list[Any], list[Any]]:
    """(the actors that answer ``reset`` within ``ANSWER_SECONDS``, those that do not); all
    asked at once."""
    answers = [actor.reset.remote() for actor in actors]
    alive, dead = [], []
    for actor, answer in zip(actors, answers):
        try:
            ray.get(answer, timeout=ANSWER_SECONDS)
            alive.append(actor)
        except Exception:  # noqa: BLE001 - any failure: it cannot be used
            dead.append(actor)
    return alive, dead


def _kind(ray: Any, cls: type, options: dict[str, Any]) -> tuple:
    """(this Ray's GCS address, class, options): actors of another Ray never match."""
    frozen = tuple(sorted((k, repr(v)) if isinstance(v, (dict, list)) else (k, v)
                          for k, v in options.items()))
    return ray.get_runtime_context().gcs_address, cls.__name__, frozen


def kill_actors(ray: Any, actors: list[Any]) -> None:
    for actor in actors:
        try:
            ray.kill(actor)
        except Exception:  # noqa: BLE001 - already dead, or its Ray is gone
            pass
