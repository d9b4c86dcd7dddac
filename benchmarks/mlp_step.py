"""Forward + backward + SGD step of an MLP 784-512-256-10, float32, batch 128: ermlab vs PyTorch.

Run by hand (not a test):  python benchmarks/mlp_step.py [--repeats 7] [--steps 50] [--batch 128]

Both frameworks get the same architecture, batch, loss (softmax cross-entropy)
and plain SGD (lr 0.01), in the same process, one after the other, alternating
rounds so that machine load affects both alike. Prints the median time per
step of each and the ratio ermlab / PyTorch (< 1 means ermlab is faster).

``--batch 1`` is per-example SGD. Measured there (AMD EPYC Zen 5, 2 threads, issue 11),
before the outer-product kernel for ∂L/∂W (``nn._products.matmul``; NumPy's
``matmul`` computed Gᵀ H of one example in an unvectorized loop of its own): ermlab 0.67
ms a step against PyTorch's 0.22 (3.1×); after it 0.21 ms (1.00×).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from common import time_per_step, torch_mlp

from ermlab import nn, optim
from ermlab.losses import SoftmaxCrossEntropy

SIZES = [784, 512, 256, 10]
BATCH = 128


def ermlab_step(seed: int, batch: int = BATCH):
    rng = np.random.default_rng(seed)
    model = nn.mlp(SIZES, activation="relu", rng=rng)
    loss = SoftmaxCrossEntropy()
    opt = optim.SGD(model.parameters(), lr=0.01)
    x = rng.standard_normal((batch, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], batch)

    def step():
        loss.forward(model.forward(x), y)
        opt.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        opt.step()

    return step


def torch_step(seed: int, batch: int = BATCH):
    import torch

    torch.manual_seed(seed)
    model = torch_mlp(SIZES)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = torch.nn.CrossEntropyLoss()
    x = torch.randn(batch, SIZES[0])
    y = torch.randint(0, SIZES[-1], (batch,))

    def step():
        opt.zero_grad()
        criterion(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=BATCH, help="batch size (1: per example)")
    args = parser.parse_args()
    import torch

    candidates = {"ermlab": ermlab_step(0, args.batch), "pytorch": torch_step(0, args.batch)}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name, step in candidates.items():
            times[name].append(time_per_step(step, args.steps))
    ours, theirs = statistics.median(times["ermlab"]), statistics.median(times["pytorch"])
    print(f"MLP {'-'.join(map(str, SIZES))}, batch {args.batch}, float32, SGD; "
          f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"ermlab   {ours * 1e3:7.2f} ms/step (median of {args.repeats})")
    print(f"pytorch  {theirs * 1e3:7.2f} ms/step (median of {args.repeats})")
    print(f"ratio ermlab/pytorch = {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
