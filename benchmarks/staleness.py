"""Staleness study: how simulated delays hurt Downpour-AdaGrad, delay-tolerant AdaGrad and
asynchronous EASGD, with the in-process implementation (no cluster needed).

Every gradient (Downpour) or centre read (EASGD) is k updates old, k ∈ {0, 1, 4,
16, 64} (``delay=k`` of ``ermlab.distributed.inprocess.InProcessServer``):

* Downpour-AdaGrad: one worker, server applies ``optim.Adagrad`` (staleness = k);
* delay-tolerant AdaGrad: the same with ``DelayTolerantAdagrad`` (McMahan & Streeter 2014);
* async EASGD: 4 workers, τ = 1, α = 0.9/4, SGD steps; each elastic move reads the centre
  k updates old.

Problem: a Fashion-MNIST MLP 784-128-10 (ReLU) on ``--train`` training images
(pixels in [0, 1] minus the training mean), batch 32, ``--epochs`` epochs; test
on the 10k test images. Prints the final test loss and accuracy per method and
delay, and draws into ``--png`` (default ``docs/images/staleness.png``, committed)
the final test accuracy against the delay (left) and the per-epoch test loss
curves of each method. The runs are deterministic (seeded); only the times
depend on the machine. Run by hand:

    python benchmarks/staleness.py [--train 10000] [--epochs 5] [--png docs/images/staleness.png]

Measured (10k images, 5 epochs; final test loss / accuracy; re-run on 2026-11-30
with the same values to the digits shown, as seeded runs should; the figure is
``docs/images/staleness.png``):

    delay k           0            1            4            16            64
    Downpour-AdaGrad  .446 / .849  .436 / .853  .469 / .844  .953 / .830   8.86 / .778
    delay-tolerant    .446 / .849  .433 / .855  .436 / .847  .461 / .832   .534 / .814
    async EASGD (4)   .586 / .794  .586 / .794  .586 / .794  3.9e33 / .551 6.6e20 / .013

Delay-tolerant AdaGrad is AdaGrad at k = 0 and keeps the loss within 20 % of it
up to k = 64, where plain AdaGrad's loss is 20× higher. Async EASGD with
α = 0.225 diverges once kα > 1: a centre read k moves old makes k workers'
moves pull the centre by the same stale difference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ermlab import losses, nn, optim
from ermlab.data import datasets
from ermlab.distributed import EASGD, DelayTolerantAdagrad, Downpour
from ermlab.training import Trainer

DELAYS = (0, 1, 4, 16, 64)
PNG = Path(__file__).resolve().parent.parent / "docs" / "images" / "staleness.png"


def data(train: int):
    d = datasets.load("fashion-mnist")
    x = d.x_train[:train].reshape(train, -1).astype(np.float32)
    xt = d.x_test.reshape(len(d.x_test), -1).astype(np.float32)
    if x.max() > 1:
        x, xt = x / 255, xt / 255
    mean = x.mean(axis=0)
    return x - mean, d.y_train[:train].astype(np.int64), xt - mean, d.y_test.astype(np.int64)


METHODS = {
    "Downpour-AdaGrad": (lambda p, lr: optim.Adagrad(p, lr=lr),
                         lambda k: Downpour(workers=1, delay=k), 0.05),
    "delay-tolerant AdaGrad": (lambda p, lr: DelayTolerantAdagrad(p, lr=lr),
                               lambda k: Downpour(workers=1, delay=k), 0.05),
    "async EASGD (4 workers)": (lambda p, lr: optim.SGD(p, lr=lr),
                                lambda k: EASGD(workers=4, tau=1, delay=k), 0.05),
}


def run(method: str, delay: int, x, y, xt, yt, epochs: int) -> dict:
    make_opt, make_strategy, lr = METHODS[method]
    model = nn.mlp([784, 128, 10], rng=0)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), make_opt(model.parameters(), lr),
                      rng=1, strategy=make_strategy(delay))
    start = time.perf_counter()
    history = trainer.fit(x, y, epochs=epochs, batch_size=32, validation_data=(xt, yt))
    return {"loss": history["val_loss"], "accuracy": history["val_accuracy"],
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--png", default=str(PNG))
    args = parser.parse_args()
    x, y, xt, yt = data(args.train)
    results = {}
    print(f"{'method':26s} {'delay':>5s} {'test loss':>10s} {'test acc':>9s} {'s':>6s}")
    for method in METHODS:
        for k in DELAYS:
            r = results[method, k] = run(method, k, x, y, xt, yt, args.epochs)
            print(f"{method:26s} {k:5d} {r['loss'][-1]:10.4f} {r['accuracy'][-1]:9.4f} "
                  f"{r['seconds']:6.1f}", flush=True)
    plot(results, args.png)
    print(f"curves: {args.png}")


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METHODS) + 1, figsize=(4.2 * (len(METHODS) + 1), 3.8))
    final, curves = axes[0], axes[1:]
    for method in METHODS:
        final.plot(range(len(DELAYS)), [results[method, k]["accuracy"][-1] for k in DELAYS],
                   marker="o", label=method)
    final.set_xticks(range(len(DELAYS)), [str(k) for k in DELAYS])
    final.set_xlabel("delay k (updates)")
    final.set_ylabel("final test accuracy")
    final.set_title("after the last epoch")
    final.grid(alpha=0.3)
    final.legend(fontsize=8)
    for ax, method in zip(curves, METHODS):
        for k in DELAYS:
            loss = results[method, k]["loss"]
            diverged = not loss[-1] < 10 * results[method, 0]["loss"][-1]
            ax.plot(range(1, len(loss) + 1), loss, marker="o",
                    label=f"delay {k}" + (f" (final {loss[-1]:.3g}, off the axis)"
                                          if diverged else ""))
        ax.set_ylim(0.2, 5.0)
        ax.set_title(method)
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    curves[0].set_ylabel("test loss")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
