"""Clean vs FGSM/PGD accuracy on Fashion-MNIST: standard, adversarially trained and
noise-injected-ensemble models (issue 14's "numbers to report").

Run by hand (not a test):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/robustness.py \
        [--train 3000] [--test 200] [--epochs 3] [--eps 0.02,0.05,0.1] [--steps 7]
        [--noise 0.1] [--draws 2] [--threads 1]

Data: Fashion-MNIST pixels in [0, 1] (no preprocessing, so ε is in pixel units and the
valid range is [0, 1]); a stratified-by-chance subsample of ``--train`` training images and
the first ``--test`` test images. Models, all trained with Adam (lr 1e-3, batch 128):

* MLP 784-256-10, standard;
* the same MLP adversarially trained (Madry et al. 2018): every batch replaced by
  PGD-5 examples at ε = ``--train-eps`` (default 0.1), random start;
* ResNet-8 (the CIFAR ResNet of He et al. with n = 1, width 8, on 28×28), standard;
* two noise-injected ResNet-8 (Wang, Yuan, Shi & Osher 2019; σ = ``--noise``), at
  training and test time, as an ``Ensemble(draws=D)``: 2 members × D = ``--draws``
  noise draws.

Attacks (L∞, eps from ``--eps``): FGSM and PGD with ``--steps`` steps (step 2.5 ε/T,
random start). The ensemble is attacked end to end: the gradient of −log of its averaged
probability over members and draws (fresh noise at every step, an EOT attack).

Measured (defaults: 3000 training images, 3 epochs, 200 test images, PGD-7; accuracy in %
on the test images; one thread, load average ≈ 20 on 2 shared cores, so the seconds are
inflated several-fold; 2026-11-30):

    | model                 | train s | clean | FGSM .02  .05  .1 | PGD-7 .02  .05  .1 |
    |-----------------------|---------|-------|-------------------|--------------------|
    | MLP standard          |       3 |  78.0 |  67.5  41.5  15.5 |  67.0  40.5  14.0  |
    | MLP PGD-trained ε=0.1 |      14 |  75.5 |  69.5  60.0  47.0 |  69.5  58.5  46.5  |
    | ResNet-8 standard     |     125 |  66.5 |  39.5  21.5  11.0 |  38.0  13.5   1.5  |
    | ResNet-8 σ=0.1 ens.   |     275 |  65.5 |  47.5  25.5  11.0 |  46.5  18.0   0.0  |

(ens.: the ensemble of 2 noise-injected ResNet-8 × 2 draws.)

What it says: Madry et al.'s training costs 2.5 points of clean accuracy and triples the
PGD accuracy at ε = 0.1 (14 → 46.5 %); PGD is at least as strong as FGSM everywhere.
The noise-injected ensemble keeps the plain ResNet's clean accuracy and is more robust
at small ε (PGD ε = 0.02: 46.5 vs 38 %; 0.05: 18 vs 13.5 %) but not at ε = 0.1, where
an end-to-end EOT attack on the averaged probabilities breaks both — the gain Wang et
al. report comes with adversarial training of the noisy members, not done here. The
ResNets are short-trained (3 epochs on 3,000 images), hence their low clean accuracy.

BLAS runs on ``--threads`` threads (default 1: on the shared, oversubscribed machine
OpenBLAS's multithreaded GEMM stalls; see benchmarks/cnn.py). The machine is shared and
noisy; times are indicative only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ermlab import data, nn
from ermlab.ensemble import Ensemble
from ermlab.losses import SoftmaxCrossEntropy
from ermlab.nn import zoo
from ermlab.optim import Adam
from ermlab.robustness import FGSM, PGD, robust_accuracy
from ermlab.training import Trainer


def mlp(rng):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256, rng=rng), nn.ReLU(),
                         nn.Linear(256, 10, rng=rng))


def resnet(rng, noise):
    return zoo.resnet_cifar(8, 10, (1, 28, 28), width=8, noise_std=noise, rng=rng)


def fit(model, x, y, epochs, seed, adversary=None):
    trainer = Trainer(model, SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-3),
                      rng=seed, adversary=adversary)
    start = time.perf_counter()
    trainer.fit(x, y, epochs=epochs, batch_size=128)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eps", default="0.02,0.05,0.1")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--train-eps", type=float, default=0.1)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    eps = [float(e) for e in args.eps.split(",")]

    dataset = data.load("fashion-mnist", path="/usr/share/datasets/fashion-mnist")
    pick = np.random.default_rng(0).permutation(len(dataset.x_train))[:args.train]
    x, y = dataset.x_train[pick].astype(np.float32), dataset.y_train[pick]
    xt, yt = dataset.x_test[:args.test].astype(np.float32), dataset.y_test[:args.test]
    print(f"Fashion-MNIST: {len(x)} training, {len(xt)} test images, pixels in "
          f"[{x.min():g}, {x.max():g}]; {args.epochs} epochs")

    models = {}
    rng = np.random.default_rng(1)
    models["MLP standard"] = mlp(rng)
    seconds = {"MLP standard": fit(models["MLP standard"], x, y, args.epochs, 1)}
    models[f"MLP PGD-trained ε={args.train_eps:g}"] = mlp(np.random.default_rng(1))
    seconds[f"MLP PGD-trained ε={args.train_eps:g}"] = fit(
        models[f"MLP PGD-trained ε={args.train_eps:g}"], x, y, args.epochs, 1,
        adversary=PGD(eps=args.train_eps, steps=5))
    models["ResNet-8 standard"] = resnet(np.random.default_rng(2), 0.0)
    seconds["ResNet-8 standard"] = fit(models["ResNet-8 standard"], x, y, args.epochs, 2)
    members = [resnet(np.random.default_rng(3 + m), args.noise) for m in range(2)]
    name = f"ResNet-8 noise σ={args.noise:g}, ensemble 2×{args.draws} draws"
    seconds[name] = sum(fit(member, x, y, args.epochs, 3 + m)
                        for m, member in enumerate(members))
    models[name] = Ensemble(members, draws=args.draws)

    header = ["model", "train s", "clean"] + [f"{a} {e:g}" for a in ("FGSM", f"PGD-{args.steps}")
                                              for e in eps]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, model in models.items():
        start = time.perf_counter()
        cells, clean = [], None
        for attack in ([FGSM(eps=e) for e in eps]
                       + [PGD(eps=e, steps=args.steps) for e in eps]):
            result = robust_accuracy(model, xt, yt, attack, batch_size=250, rng=0)
            clean = result["accuracy"] if clean is None else clean
            cells.append(f"{100 * result['robust_accuracy']:.1f}")
        print(f"| {label} | {seconds[label]:.0f} | {100 * clean:.1f} | " + " | ".join(cells)
              + f" |   (attacks {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
