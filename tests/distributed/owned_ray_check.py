"""Run as a script by test_ray.py (through ray_helpers.OwnedRayCheck), in a fresh process
with RAY_TMPDIR set: OnRay starts its own Ray for a fit; after it, no process of that Ray
and none of its session files may be left. Prints "after success True" when so."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def ray_processes():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if os.environ["RAY_TMPDIR"].encode() in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def settled(ray):
    deadline = time.time() + 15
    while ray_processes() and time.time() < deadline:
        time.sleep(0.2)
    return (not ray.is_initialized() and not ray_processes()
            and os.listdir(os.environ["RAY_TMPDIR"]) == [])  # its session files removed too


def main():
    import ray
    from strategy_helpers import blobs, mlp_trainer

    from ermlab import optim
    from ermlab.distributed import Downpour, OnRay

    x, y = blobs(32)
    trainer = mlp_trainer(optimizer=lambda p: optim.Adagrad(p, lr=0.1),
                          strategy=OnRay(Downpour(workers=1), num_cpus=2))
    trainer.fit(x, y, epochs=1, batch_size=8)
    print("after success", settled(ray))


if __name__ == "__main__":
    main()
