"""Ring all-reduce: every one of k ranks ends with the sum of the k ranks' vectors.

Each rank cuts its vector v_r into k chunks c_{r,0} … c_{r,k−1} (sizes differ by
at most one) and talks only to its ring neighbours: it sends to rank r + 1 and
receives from rank r − 1 (mod k). In 2(k − 1) steps (Patarasuk & Yuan 2009;
the scheme of Baidu's allreduce and Horovod, Sergeev & Del Balso 2018):

    reduce-scatter, t = 0 … k−2:  send chunk (r − t) mod k;
                                  receive chunk j = (r − t − 1) mod k, c_j ← c_j + received
    after it, rank r holds the whole sum S_j = Σ_i c_{i,j} of chunk j = (r + 1) mod k
    all-gather,     t = 0 … k−2:  send chunk (r + 1 − t) mod k;
                                  receive chunk j = (r − t) mod k, c_j ← received

Each rank sends and receives 2(k − 1)/k · |v| numbers, whatever k: the
bandwidth-optimal all-reduce. Every chunk's sum is formed once, on one rank, and
then copied, so all ranks end with the same bits (their replicas stay
identical after the same update), though the order of the additions (and so
the last bit) differs from a plain left-to-right sum.

``ring_allreduce`` is the algorithm alone, over two functions ``send(rank,
tag, array)`` and ``receive(tag) -> array``; ``Mailbox`` is the receiving side
of a rank whose messages arrive on another thread (a Ray actor's mail
concurrency group, ``ray_workers.SyncWorker``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

import numpy


def ring_allreduce(vector: numpy.ndarray, rank: int, size: int,
                   send: Callable[[int, Hashable, numpy.ndarray], None],
                   receive: Callable[[Hashable], numpy.ndarray],
                   tag: Hashable = 0) -> numpy.ndarray:
    """Σ over the ``size`` ranks of their ``vector`` (1-D), by the ring; ``vector`` is summed
    in place and returned. Messages are tagged ``(tag, phase, step)``; give each call on
    the same ranks its own ``tag``."""
    if size == 1:
        return vector
    chunks = numpy.array_split(vector, size)  # views: sums land in ``vector``
    right = (rank + 1) % size
    for t in range(size - 1):
        send(right, (tag, "reduce", t), chunks[(rank - t) % size])
        chunks[(rank - t - 1) % size] += receive((tag, "reduce", t))
    for t in range(size - 1):
        send(right, (tag, "gather", t), chunks[(rank + 1 - t) % size])
        chunks[(rank - t) % size][...] = receive((tag, "gather", t))
    return vector


class Mailbox:
    """Messages by tag, put by one thread and waited for by another."""

    def __init__(self) -> None:
        self._messages: dict[Hashable, Any] = {}
        self._arrived = threading.Condition()

    def put(self, tag: Hashable, message: Any) -> None:
        with self._arrived:
            self._messages[tag] = message
            self._arrived.notify_all()

    def take(self, tag: Hashable, timeout: float | None = None) -> Any:
        """The message tagged ``tag`` (waits for it); ``TimeoutError`` after ``timeout`` s."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: tag in self._messages, timeout):
                raise TimeoutError(f"no message {tag!r} within {timeout} s: a peer of the "
                                   "all-reduce is gone")
            return self._messages.pop(tag)
