"""Seconds per training epoch of an MLP 784-512-256-10 with Adam, batch 128, float32:
ermlab vs PyTorch CPU vs scikit-learn's MLPClassifier, in the same run.

Run by hand (not a test):

    python benchmarks/mlp_epoch.py [--epochs 3] [--data fashion-mnist|synthetic]

Fashion-MNIST comes from ``ermlab.data.load`` (the Debian package
``dataset-fashion-mnist``, the cache, or a download); ``--data synthetic`` uses
random data of the same shape. Each framework trains ``--epochs`` epochs on
the same 60,000 examples with the same architecture, optimizer (Adam, lr 1e-3)
and batch size; the median epoch is reported, with test accuracy as a sanity
check, and the ratios to ermlab. The fraction of subnormal values in Adam's
first moment is printed at the end (see shared PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from common import torch_mlp

SIZES = [784, 512, 256, 10]
BATCH = 128


def load(kind: str):
    if kind == "synthetic":
        rng = np.random.default_rng(0)
        x = rng.random((70000, 784), dtype=np.float32)
        y = rng.integers(0, 10, 70000)
        return x[:60000], y[:60000], x[60000:], y[60000:]
    from ermlab import data

    d = data.load("fashion-mnist")
    flat = [a.reshape(len(a), -1).astype(np.float32) for a in (d.x_train, d.x_test)]
    return flat[0], d.y_train, flat[1], d.y_test


def run_ermlab(x, y, xt, yt, epochs):
    from ermlab import losses, nn, optim
    from ermlab.training import Trainer

    model = nn.mlp(SIZES, rng=0)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optimizer, rng=0)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        trainer.fit(x, y, epochs=1, batch_size=BATCH)
        times.append(time.perf_counter() - start)
    m = np.concatenate([s["exp_avg"].ravel() for s in optimizer.state.values()])
    subnormal = np.mean((m != 0) & (np.abs(m) < np.finfo(np.float32).tiny))
    return times, float(np.mean(trainer.predict(xt) == yt)), subnormal


def run_torch(x, y, xt, yt, epochs):
    import torch

    torch.manual_seed(0)
    model = torch_mlp(SIZES)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    xs, ys = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(xs), generator=generator)
        for i in range(0, len(xs), BATCH):
            index = order[i:i + BATCH]
            optimizer.zero_grad()
            criterion(model(xs[index]), ys[index]).backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean()
    return times, float(accuracy), None


def run_sklearn(x, y, xt, yt, epochs):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=tuple(SIZES[1:-1]), solver="adam",
                        learning_rate_init=1e-3, batch_size=BATCH, max_iter=1, alpha=0.0,
                        shuffle=True, random_state=0, warm_start=True)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(epochs):
            start = time.perf_counter()
            clf.fit(x, y)
            times.append(time.perf_counter() - start)
    return times, float(np.mean(clf.predict(xt) == yt)), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", choices=("fashion-mnist", "synthetic"), default="fashion-mnist")
    parser.add_argument("--only", nargs="*", default=["ermlab", "pytorch", "sklearn"])
    args = parser.parse_args()
    import sklearn
    import torch

    x, y, xt, yt = load(args.data)
    runners = {"ermlab": run_ermlab, "pytorch": run_torch, "sklearn": run_sklearn}
    results = {name: runners[name](x, y, xt, yt, args.epochs) for name in args.only}
    print(f"MLP {'-'.join(map(str, SIZES))}, Adam lr 1e-3, batch {BATCH}, float32, {args.data}, "
          f"{args.epochs} epochs each; numpy {np.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), scikit-learn {sklearn.__version__}")
    base = statistics.median(results["ermlab"][0]) if "ermlab" in results else None
    for name, (times, accuracy, _) in results.items():
        median = statistics.median(times)
        ratio = f"  {name}/ermlab = {median / base:.2f}" if base else ""
        print(f"{name:8s} {median:6.2f} s/epoch (median; all: "
              f"{', '.join(f'{t:.2f}' for t in times)})  test accuracy {accuracy:.4f}{ratio}")
    if "ermlab" in results:
        print(f"subnormal fraction of Adam's m after training: {results['ermlab'][2]:.4f}")


if __name__ == "__main__":
    main()
