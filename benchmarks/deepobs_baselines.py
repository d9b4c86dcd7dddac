"""DeepOBS's published fmnist_2c2d baselines (SGD, Momentum, Adam) side by side with ermlab.

    git --git-dir=/path/to/DeepOBS_Baselines.git archive HEAD fmnist_2c2d | tar -x -C BASE
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/deepobs_baselines.py \
        --baselines BASE [--epochs 2] [--seeds 1] [--n-jobs 2] [--out deepobs-bench]

``BASE`` holds DeepOBS's result files (``fmnist_2c2d/<optimizer>/<setting>/*.json``,
github.com/fsschneider/DeepOBS_Baselines; third-party data, not in this repository).
The script

1. prints the published tuned results: per optimizer the tuned setting (the one
   rerun over 10 seeds, 42–51), the final test accuracy and loss after 100 epochs,
   and the test accuracy after each of the first ``--epochs`` epochs, mean ± std
   over the seeds (read with ``ermlab.lab.results``, which maps DeepOBS's files);
2. trains ermlab's fmnist_2c2d as DeepOBS 1.1 sets it up (``ermlab.lab.deepobs``:
   all 60,000 training images, batch 128, no weight decay, truncated-normal
   initialization σ 0.05 and biases 0.05) with each published tuned setting — the
   same learning rate, momentum 0.99 in TensorFlow's form (= ermlab's default
   ``momentum_form="torch"``), Adam's β = (0.9, 0.999), ε = 1e-8 — for ``--epochs``
   epochs and ``--seeds`` seeds (42, 43, ...), in ``--n-jobs`` single-threaded
   processes, one lab run file each under ``--out`` (a rerun resumes);
3. prints, epoch by epoch, our test accuracy and loss next to DeepOBS's mean ± std
   and [min, max] over their 10 seeds, and whether ours lies inside that spread.

``ermlab lab summary OUT --baselines BASE`` gives the final-epoch rows of both.
``--init ermlab`` trains with the lab catalog's initialization instead (He/Glorot
uniform, zero biases; a separate --out folder by default).

Cost: one epoch of fmnist_2c2d (469 steps of 128 images, then evaluating 30,000
images) is about 250 CPU seconds with one BLAS thread here (0.45 CPU-s a step);
the three optimizers × 1 seed × 2 epochs are ~25 CPU-minutes, ~13 min on 2 idle
cores — the default. DeepOBS's 100 epochs would be ~7 CPU-hours per run.

Measured 2026-11-30 (``--epochs 1 --seeds 1 --n-jobs 3``; a shared 2-core Xeon at load
average 11–26 from other jobs, so the wall clock — 49.9 min, 2,420 s of training per
epoch — says nothing; the CPU time does: 249–250 CPU-s per epoch and run, training and
evaluation of 30,000 images, one BLAS thread). Two epochs (the default) were started
first and stopped: at that load they would have ended after the time allowed.

DeepOBS (TensorFlow, 10 seeds 42–51), tuned setting → final test accuracy after 100
epochs, and test accuracy after epochs 1 / 2 (mean ± std over seeds):

    SGD       lr 0.158              0.9227 ± 0.0018   0.8545 ± 0.0118 / 0.8754 ± 0.0091
    Momentum  lr 2.51e-3, μ 0.99    0.9214 ± 0.0021   0.8517 ± 0.0084 / 0.8800 ± 0.0055
    Adam      lr 2.51e-4            0.9234 ± 0.0029   0.8526 ± 0.0057 / 0.8761 ± 0.0033

ermlab, same settings, seed 42, after epoch 0 and 1 — test accuracy / test loss, ours
vs DeepOBS's mean ± std [min, max]; every value inside their seed spread:

    epoch 0 (all)  0.1005 / 2.3501   vs 0.1123 ± 0.0265 [0.059, 0.163] / 2.3545 ± 0.0270
                                        (the initialization matches DeepOBS's)
    SGD      1     0.8591 / 0.3883   vs 0.8545 ± 0.0118 [0.832, 0.865] / 0.3957 ± 0.0209
    Momentum 1     0.8574 / 0.3888   vs 0.8517 ± 0.0084 [0.833, 0.863] / 0.4010 ± 0.0160
    Adam     1     0.8501 / 0.4090   vs 0.8526 ± 0.0057 [0.843, 0.862] / 0.4077 ± 0.0143

Rerun with the default (``--epochs 2 --n-jobs 2``) on the idle machine: 3 runs in 15.6 min
wall (load average 0.9 before, 1.0 after; an unrelated CI run shared the cores for its first
10 min), 192–195 CPU-s per epoch and run. Epoch 0 and 1 as above, bit for bit; epoch 2, ours
vs DeepOBS's — every value again inside their seed spread:

    SGD      2     0.8635 / 0.3585   vs 0.8754 ± 0.0091 [0.854, 0.886] / 0.3397 ± 0.0174
    Momentum 2     0.8749 / 0.3360   vs 0.8800 ± 0.0055 [0.867, 0.888] / 0.3292 ± 0.0130
    Adam     2     0.8771 / 0.3395   vs 0.8761 ± 0.0033 [0.871, 0.880] / 0.3442 ± 0.0074

The 100-epoch finals (DeepOBS's published numbers) are ~5–7 CPU-hours per run here
(~15–21 for the three, ~900 for their whole tuning protocol); not run.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy

from ermlab.lab import deepobs, metrics, protocol, results
from ermlab.lab.problems import catalog

PROBLEM = "fmnist_2c2d"
OURS = {"deepobs-sgd": "sgd", "deepobs-momentum": "momentum", "deepobs-adam": "adam"}
ADAM_DEFAULTS = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baselines", required=True,
                        help="folder holding fmnist_2c2d/ of DeepOBS_Baselines")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--optimizers", default="sgd,momentum,adam")
    parser.add_argument("--init", choices=("deepobs", "ermlab"), default="deepobs")
    parser.add_argument("--data-path", default=None, help="Fashion-MNIST IDX folder")
    parser.add_argument("--out", default=None, help="default: deepobs-bench-<init>")
    parser.add_argument("--n-train", type=int, default=None,
                        help="smoke test only: train on the first N training images")
    args = parser.parse_args()
    out = args.out or f"deepobs-bench-{args.init}"
    wanted = [f"deepobs-{name.strip()}" for name in args.optimizers.split(",")]
    unknown = [name for name in wanted if name not in OURS]
    if unknown or args.epochs < 1 or args.seeds < 1:
        parser.error(f"--optimizers takes sgd, momentum, adam (got {unknown}); --epochs and "
                     "--seeds must be ≥ 1")

    published = metrics.final_runs(results.load_all(args.baselines, problem=PROBLEM))
    theirs = {name: published[PROBLEM, name] for name in wanted if (PROBLEM, name) in published}
    if len(theirs) != len(wanted):
        raise SystemExit(f"{args.baselines}: no DeepOBS runs of {PROBLEM} for "
                         f"{sorted(set(wanted) - set(theirs))}; give the folder holding "
                         f"{PROBLEM}/GradientDescentOptimizer/...")
    print_published(theirs, args.epochs)

    problem = deepobs.fmnist_2c2d(args.data_path, epochs=args.epochs, n_train=args.n_train)
    if args.init == "ermlab":
        problem.model = catalog.net_2c2d
        problem.settings = {**problem.settings, "init": "ermlab catalog (He/Glorot uniform)"}
    jobs = [protocol.Job(problem, OURS[name], tuple(our_setting(runs[0]).items()), seed,
                         args.epochs, out)
            for name, runs in theirs.items() for seed in range(42, 42 + args.seeds)]
    start, load = time.perf_counter(), os.getloadavg()
    ran = protocol.execute(jobs, args.n_jobs, progress=True, description="ermlab runs")
    wall = time.perf_counter() - start
    ours = {name: [results.load(job.path) for job in jobs if job.optimizer == OURS[name]]
            for name in theirs}
    print(f"\n{len(ran)} runs trained in {wall / 60:.1f} min wall with {args.n_jobs} "
          f"processes (load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after; "
          f"{len(jobs) - len(ran)} found finished in {out})")
    for name, runs in ours.items():
        cpu = [r["cpu_time"] / r["num_epochs"] for r in runs]
        train = [r["train_times"][-1] / r["num_epochs"] for r in runs]
        print(f"  {OURS[name]:9s} CPU s/epoch (training + evaluation) "
              f"{numpy.median(cpu):.0f}, training wall s/epoch {numpy.median(train):.0f}")
    for name in theirs:
        print_side_by_side(name, ours[name], theirs[name], args.epochs)


def our_setting(run: dict) -> dict:
    """The lab hyperparameters of DeepOBS's tuned setting (Adam's β, ε must be the defaults)."""
    hyper = dict(run["optimizer_hyperparams"])
    if run["optimizer_name"] == "deepobs-adam":
        others = {k: hyper.pop(k) for k in list(hyper) if k != "lr"}
        if any(not math.isclose(v, ADAM_DEFAULTS[k]) for k, v in others.items()):
            raise SystemExit(f"DeepOBS's Adam setting {others} differs from ermlab's defaults "
                             f"{ADAM_DEFAULTS}; this script passes only lr")
    return hyper


def spread(runs: list[dict], key: str, epoch: int) -> numpy.ndarray:
    return numpy.array([r[key][epoch] for r in runs], dtype=float)


def print_published(theirs: dict[str, list[dict]], epochs: int) -> None:
    print(f"DeepOBS's published {PROBLEM} baselines (tuned setting, mean ± std over seeds):")
    for name, runs in theirs.items():
        final = runs[0]["num_epochs"]
        acc, loss = spread(runs, "test_accuracies", final), spread(runs, "test_losses", final)
        early = "  ".join(f"{e}: {_pm(spread(runs, 'test_accuracies', e))}"
                          for e in range(1, min(epochs, final) + 1))
        setting = " ".join(f"{k}={v:g}" for k, v in runs[0]["optimizer_hyperparams"].items())
        print(f"  {name:17s} {setting}, "
              f"{len(runs)} seeds: after {final} epochs test acc {_pm(acc)}, "
              f"test loss {_pm(loss)}\n  {'':17s} test acc after epoch {early}")


def print_side_by_side(name: str, ours: list[dict], theirs: list[dict], epochs: int) -> None:
    print(f"\n{OURS[name]} (lr {ours[0]['optimizer_hyperparams']['lr']:.4g}): ours "
          f"({len(ours)} seed{'s' * (len(ours) > 1)}) vs DeepOBS ({len(theirs)} seeds); "
          "inside = within DeepOBS's [min, max] over seeds")
    print(f"  {'epoch':>5s}  {'ours acc':>9s}  {'DeepOBS acc mean ± std [min, max]':>36s}  "
          f"{'in':>3s}  {'ours loss':>9s}  {'DeepOBS loss mean ± std [min, max]':>36s}  in")
    for epoch in range(epochs + 1):
        cells = []
        for key in ("test_accuracies", "test_losses"):
            mine, ref = spread(ours, key, epoch), spread(theirs, key, epoch)
            inside = all(ref.min() <= v <= ref.max() for v in mine)
            cells.append(f"{_values(mine):>9s}  {_pm(ref)} [{ref.min():.4f}, {ref.max():.4f}]"
                         f"  {'yes' if inside else 'no':>3s}")
        print(f"  {epoch:5d}  " + "  ".join(cells))


def _pm(values: numpy.ndarray) -> str:
    return f"{values.mean():.4f} ± {values.std(ddof=1) if values.size > 1 else 0.0:.4f}"


def _values(values: numpy.ndarray) -> str:
    return "/".join(f"{v:.4f}" for v in values)


if __name__ == "__main__":
    main()
