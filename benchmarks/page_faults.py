"""Page faults and time per training step with glibc's malloc thresholds as ermlab sets
them (``ermlab._malloc``) and as glibc leaves them (``ERMLAB_MALLOC=0``), fresh processes
alternating.

Run by hand (not a test):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/page_faults.py \\
        [--rounds 4] [--steps 100] [--networks lenet vgg resnet20]

Each process builds the networks of ``benchmarks/cnn.py`` (float32, batch 128, SGD with
momentum 0.9 on one fixed random batch; LeNet-5, the small VGG, ResNet-20) and times
``--steps`` steps of each after 3 warm-up steps (ResNet-20 and the VGG take a fifth and a
half as many): the median step, ms, wall clock, and per step the minor page faults and the
system CPU time (``getrusage``: the kernel's time, page faults included, over all threads).
The table gives the median over ``--rounds`` processes per setting and the ratio of the
step times (ermlab's thresholds / glibc's).

Measured (AMD EPYC Zen 5 VM, 2 vCPUs, 2 threads, 4 rounds), ermlab's → glibc's: LeNet-5
6.09 → 7.14 ms a step (0.85×), 0.3 → 572 faults, 0.24 → 1.74 ms of system time; the small
VGG 79.3 → 86.0 ms (0.92×), 0 → 1813 faults, 0.8 → 11.5 ms; ResNet-20 175.1 → 173.0 ms
(1.01×), 54 → 87 faults, 4.7 → 4.2 ms (the pool's waits call ``sched_yield``, and that
is system time too).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from common import blas_kernel, child

CHILD = r"""
import json, resource, statistics, sys, time
config = json.loads(sys.argv[1])
sys.path.insert(0, config["folder"])
import cnn

out = {}
for name, steps in config["networks"].items():
    step = cnn.ermlab_step(name)[0]
    for _ in range(3):
        step()
    times = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    out[name] = {"ms": 1e3 * statistics.median(times),
                 "faults": (after.ru_minflt - before.ru_minflt) / steps,
                 "system_ms": 1e3 * (after.ru_stime - before.ru_stime) / steps}
import ermlab._malloc
out["configured"] = ermlab._malloc._configured
print(json.dumps(out))
"""

NETWORKS = {"lenet": ("LeNet-5 28×28×1", 1), "vgg": ("small VGG 32×32×3", 2),
            "resnet20": ("ResNet-20 32×32×3", 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--networks", nargs="*", choices=sorted(NETWORKS),
                        default=["lenet", "vgg", "resnet20"])
    args = parser.parse_args()
    config = {"networks": {NETWORKS[n][0]: max(5, args.steps // NETWORKS[n][1])
                           for n in args.networks},
              "folder": str(Path(__file__).resolve().parent)}
    settings = {"ermlab": {}, "glibc": {"ERMLAB_MALLOC": "0"}}
    runs: dict = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, environ in settings.items():
            runs[name].append(child(CHILD, config, None, environ))
    print(f"batch 128, float32; {blas_kernel()}; {args.rounds} processes per setting, "
          "medians")
    print("thresholds set by ermlab in its processes:", [r["configured"] for r in runs["ermlab"]],
          "in glibc's:", [r["configured"] for r in runs["glibc"]])
    print(f"{'network':22s} {'thresholds':10s} {'ms/step':>9s} {'faults/step':>12s} "
          f"{'system ms/step':>15s}")
    for network in config["networks"]:
        medians = {}
        for name in settings:
            rows = [r[network] for r in runs[name]]
            medians[name] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            m = medians[name]
            print(f"{network:22s} {name:10s} {m['ms']:9.2f} {m['faults']:12.1f} "
                  f"{m['system_ms']:15.2f}   (ms: "
                  + ", ".join(f"{r['ms']:.2f}" for r in rows) + ")")
        ratio = medians["ermlab"]["ms"] / medians["glibc"]["ms"]
        print(f"{'':22s} {'ratio':10s} {ratio:9.2f}  (ermlab's thresholds / glibc's)")


if __name__ == "__main__":
    main()
