"""Pieces the benchmark scripts share: the PyTorch twins of ``ermlab.nn.mlp`` and of the CNNs of
cnn.py, the BLAS in use, a step timer, and this tree against a git revision in alternating
fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def torch_mlp(sizes: Sequence[int]):
    """torch.nn.Sequential(Linear, ReLU, …, Linear): the architecture of ``ermlab.nn.mlp``."""
    import torch

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def torch_resnet20():
    """He et al.'s CIFAR ResNet-20 with option-A shortcuts, as ``zoo.resnet20(shortcut="A")``:
    the same boxes (bias-free convolutions, batch norm, non-in-place ReLU, zero-padded
    shortcut channels split (C_out − C_in) // 2 before, the rest after)."""
    return torch_resnet((16, 32, 64), 3, "A")


def torch_resnet18():
    """The CIFAR ResNet-18, as ``zoo.resnet18(10, (3, 32, 32))``: a 3×3 stem of 64 channels,
    two basic blocks per stage (64, 128, 256, 512), option-B shortcuts (1×1 convolution and
    batch norm where the shape changes)."""
    return torch_resnet((64, 128, 256, 512), 2, "B")


def torch_resnet(stages: tuple[int, ...], blocks: int, shortcut: str):
    """A ResNet for 32×32 images: conv 3×3 → BN → ReLU, ``blocks`` basic blocks per stage of
    ``stages`` channels (stride 2 at the start of each stage after the first), global
    average pool, fc 10; shortcuts "A" (subsample, zero-pad the channels) or "B" (1×1
    convolution, batch norm) where the shape changes."""
    import torch
    import torch.nn as nn

    class ZeroPadShortcut(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.stride, self.before, self.after = stride, (cout - cin) // 2, cout - cin - (
                cout - cin) // 2

        def forward(self, x):
            sub = x[:, :, :: self.stride, :: self.stride]
            return nn.functional.pad(sub, (0, 0, 0, 0, self.before, self.after))

    def projection(cin: int, cout: int, stride: int) -> nn.Module:
        if shortcut == "A":
            return ZeroPadShortcut(cin, cout, stride)
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.residual = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            )
            self.shortcut = (projection(cin, cout, stride) if stride != 1 or cin != cout
                             else nn.Identity())

        def forward(self, x):
            return torch.relu(self.residual(x) + self.shortcut(x))

    channels = stages[0]
    layers = [nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
              nn.ReLU()]
    for stage, planes in enumerate(stages):
        for index in range(blocks):
            layers.append(BasicBlock(channels, planes, 2 if stage and not index else 1))
            channels = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)]
    return nn.Sequential(*layers)


def torch_cnn(name: str):
    """The PyTorch twin of benchmarks/cnn.py's network ``name`` (LeNet…, small VGG…,
    ResNet…); the ermlab twins are ``zoo.lenet5``, ``zoo.small_vgg``, ``zoo.resnet20``,
    ``zoo.resnet18``."""
    import torch.nn as nn

    if name.startswith("ResNet-18"):
        return torch_resnet18()
    if name.startswith("ResNet"):
        return torch_resnet20()
    if name.startswith("LeNet"):
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4096, 512), nn.ReLU(), nn.Linear(512, 10),
    )


def export(revision: str, folder: Path) -> str:
    """``src`` of git revision ``revision``, exported under ``folder``."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", revision, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return str(folder / "src")


def child(code: str, config: dict, source: str | None, environ: dict | None = None) -> dict:
    """Run ``code`` in a fresh Python with ``config`` (JSON) as its argument and ermlab from
    ``source`` (None: the installed one), ``environ`` added to the environment; the JSON
    object its last line prints."""
    env = {**os.environ, **(environ or {})}
    if source is not None:
        env["PYTHONPATH"] = source + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(config)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def alternating(code: str, config: dict, before: str | None, rounds: int) -> dict:
    """{"this tree": [results], REV: [results]}: ``child(code, config, …)`` ``rounds``
    times per version, the versions alternating (``before`` None: this tree only)."""
    versions: dict = {"this tree": None}
    with tempfile.TemporaryDirectory() as folder:
        if before:
            versions[before] = export(before, Path(folder))
        runs: dict = {name: [] for name in versions}
        for _ in range(rounds):
            for name, source in versions.items():
                runs[name].append(child(code, config, source))
    return runs


def limit_threads(threads: int | None) -> None:
    """Both frameworks on ``threads`` threads (None: leave them as installed): ermlab's lanes
    and optimizers (``ERMLAB_NUM_THREADS``, read when ermlab first asks), the BLAS
    libraries (threadpoolctl) and torch's intra-op threads."""
    if threads is None:
        return
    os.environ["ERMLAB_NUM_THREADS"] = str(threads)
    import torch
    from scipy.linalg import blas  # noqa: F401 - SciPy's BLAS loaded, so that it is limited too
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    torch.set_num_threads(threads)


def blas_kernel() -> str:
    """NumPy's BLAS as threadpoolctl sees it (library, version, kernel, threads), the CPU
    and the vector width of ermlab's Numba kernels (``ermlab._numba_target``): figures
    from machines with different kernels cannot be compared."""
    import platform

    import numpy  # noqa: F401  (loads the BLAS that threadpoolctl inspects)

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl absent (pip install threadpoolctl)"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = ", ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                     f"{i.get('num_threads')} threads" for i in threadpool_info()
                     if i.get("user_api") == "blas") or "no BLAS loaded"
    try:
        from ermlab import _numba_target
    except ImportError:
        vectors = "no Numba"
    else:
        vectors = ("512-bit (-prefer-256-bit)" if _numba_target.CONFIGURED
                   else "Numba's choice")
    return f"{blas}; CPU {cpu}; kernel vectors {vectors}"


def time_per_step(step: Callable[[], None], steps: int, warmup: int = 3,
                  clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per call of ``step`` by ``clock`` (wall by default; ``time.process_time``
    counts this process's CPU time), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    start = clock()
    for _ in range(steps):
        step()
    return (clock() - start) / steps


def copy_bandwidth(nbytes: int = 64 * 2**20, repeats: int = 5,
                   clock: Callable[[], float] = time.perf_counter) -> float:
    """GB/s of np.copyto (one thread) between two float32 arrays of ``nbytes``, read and
    write counted: at 64 MiB, what memory gives one core beyond the caches."""
    import numpy as np

    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        np.copyto(dst, src)
        best = min(best, clock() - start)
    return 2 * nbytes / best / 1e9
