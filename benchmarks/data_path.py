"""The data path of ``ermlab train``: peak memory and preparation time against one epoch.

For a synthetic N × 784 float32 dataset written as an uncompressed ``.npz``
(``numpy.savez``), a compressed one or a folder of ``.npy`` files, each
measurement runs in a fresh Python process, as ``ermlab train`` does:
``run.prepare_data`` (load, split, statistics, preprocessing), then one epoch
of ``Trainer.fit`` with validation, with the default run settings (MLP of 128
hidden units, Adam, batch 32; ``--preprocess auto``: per-feature
standardization of (N, 784) rows, the mean image for ``--images``). It
reports

* preparation seconds, epoch seconds and their ratio (goal ≤ 0.2);
* peak resident memory (``VmHWM``) over the process's size before loading,
  in multiples of the data's bytes (goal ≤ 1.3), after preparation and after
  the epoch, and the resident memory at the end split into anonymous memory
  (copies) and file pages (the memory-mapped data, which the kernel can drop).

``--before REV`` also measures the ``.npz`` with the ermlab of git revision
REV (its ``src`` exported to a temporary folder), for before/after figures.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/data_path.py \\
        --rows 500000 --before 992be94

Measured on the shared 2-core AMD EPYC (AVX-512) machine, 24 GiB, under a
load average of 16–21 from other jobs (``--threads 1``: two OpenBLAS threads on
the oversubscribed cores made every epoch about 10× slower), so each time is
several times an idle machine's and varies by ±30 % between runs; read the
ratios and the memory. N × 784 float32 rows, default ``auto`` preprocessing
(per-feature standardization, the variance path), one epoch; peak: VmHWM
growth over the process before loading, end: resident anonymous / file pages,
both × the data:

=========  ================  =======  =======  =====  =====  ==========  ========
rows       file, ermlab      prepare  epoch    ratio  peak   end a/f     val_loss
=========  ================  =======  =======  =====  =====  ==========  ========
500,000    .npz @ 992be94    85.2 s   76.7 s   1.11   3.11   1.06/0.03   0.0126
500,000    .npz (mapped)     14.1 s   95.1 s   0.15   1.02   0.07/1.03   0.0126
500,000    .npy folder       8.5 s    63.9 s   0.13   1.02   0.07/1.03   0.0126
1,000,000  .npz (mapped)     28.2 s   178.2 s  0.16   1.02   0.04/1.01   0.0115
1,000,000  .npy folder       25.9 s   187.0 s  0.14   1.02   0.04/1.01   0.0115
=========  ================  =======  =======  =====  =====  ==========  ========

Before (992be94, the commit before this work): the archive read whole, an
``astype`` copy, the splits copied beside the unsplit arrays, a float64 copy
for the variance, the data transformed whole: 3.1× the data, preparation
longer than the epoch. Now the peak is the data's own pages, mapped from the
file (the kernel may drop them: data larger than memory trains, at disk
speed), plus about 4 % of anonymous memory; preparation is one pass for the
training rows' range and statistics and one for the validation and test
rows' range, 6× faster, at 0.13–0.16 of an epoch. The validation loss is the
same to the digit. A ``savez_compressed`` archive cannot be mapped: it is
read once (peak about 1.3× at 20,000 rows, where the interpreter's own growth
is a quarter of the data; → 1.0× as N grows).

On an idle machine the epoch is far shorter and the ratio was 0.23–0.27 (AMD
Zen 5, 2 cores, 1,000,000 rows: preparation 1.26–1.48 s, epoch 5.2–5.5 s).
Then the statistics pass went to lanes (``Moments.of``: blocks read and
summarized on both cores, merged in order; lanes that wait asleep, so Numba's
spin loop is not imported for them) and the stratified splits were drawn
without scikit-learn's Python lists (the same parts): preparation 0.66–0.73 s,
**0.12–0.14** of an epoch (.npz 0.73 s / 5.33 s, .npy folder 0.66 s / 5.59 s),
peak 1.01× after preparation and 1.05× after the epoch, val_loss 0.0125 as
before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import blas_kernel, export

FORMS = ("npz", "npz-compressed", "npy")

# Runs in a fresh process: prepare, train one epoch, report times and memory as JSON.
CHILD = r"""
import json, sys, time
import numpy
from ermlab import run

def status():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields

config = run.resolve(json.loads(sys.argv[1]))
if int(sys.argv[2]):
    from threadpoolctl import threadpool_limits
    threadpool_limits(int(sys.argv[2]))
import sklearn.model_selection  # noqa: the libraries, loaded before the baseline
from ermlab.training import Trainer  # noqa
base = status()["VmRSS"]
start = time.perf_counter()
data = run.prepare_data(config)
prepare = time.perf_counter() - start
after_prepare = status()["VmHWM"]
trainer = run.build_trainer(config, data, [])
start = time.perf_counter()
history = trainer.fit(data.x_train, data.y_train, epochs=1, batch_size=config["batch_size"],
                      validation_data=(data.x_val, data.y_val))
fit = time.perf_counter() - start
end = status()
print(json.dumps({"prepare": prepare, "epoch": history["time"][0], "fit": fit,
                  "base": base, "peak_prepare": after_prepare, "peak": end["VmHWM"],
                  "anon": end["RssAnon"], "file": end["RssFile"],
                  "module": run.__file__, "val_loss": history["val_loss"][0]}))
"""


def write_data(folder: Path, rows: int, images: bool, forms: list[str]) -> dict[str, Path]:
    """Synthetic float32 data: 10 classes, rows of 784 features in [0, 1] (written in blocks)."""
    import numpy

    rng = numpy.random.default_rng(0)
    shape = (rows, 1, 28, 28) if images else (rows, 784)
    x = numpy.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=numpy.float32,
                                     shape=shape)
    y = rng.integers(0, 10, rows)
    centres = rng.random((10, 784), dtype=numpy.float32)
    for start in range(0, rows, 65536):
        stop = min(rows, start + 65536)
        block = 0.2 * centres[y[start:stop]] + rng.random((stop - start, 784),
                                                          dtype=numpy.float32)
        x[start:stop] = block.reshape((stop - start, *shape[1:]))
    x.flush()
    paths = {}
    if "npy" in forms:
        (folder / "npy").mkdir()
        os.link(folder / "x.npy", folder / "npy" / "x.npy")
        numpy.save(folder / "npy" / "y.npy", y)
        paths["npy"] = folder / "npy"
    for form, save in (("npz", numpy.savez), ("npz-compressed", numpy.savez_compressed)):
        if form in forms:
            save(folder / f"{form}.npz", x=x, y=y)
            paths[form] = folder / f"{form}.npz"
    return paths


def measure(path: Path, source: str | None, settings: dict, threads: int) -> dict:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = source + os.pathsep + env.get("PYTHONPATH", "")
    config = {"dataset": str(path), "epochs": 1, **settings}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config), str(threads)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the measurement of {path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="N (default 200000)")
    parser.add_argument("--forms", default="npz,npy", help=f"of {', '.join(FORMS)}")
    parser.add_argument("--images", action="store_true",
                        help="(N, 1, 28, 28) images (mean image) instead of (N, 784) rows")
    parser.add_argument("--before", metavar="REV", help="also measure the .npz with this "
                        "git revision's ermlab (e.g. 992be94)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="limit BLAS to this many "
                        "threads (threadpoolctl; default: as configured)")
    parser.add_argument("--folder", help="where to write the data (default: a temporary "
                        "folder, removed after)")
    args = parser.parse_args(argv)
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        parser.error(f"unknown form {unknown[0]!r}; choose from {', '.join(FORMS)}")
    if args.before and "npz" not in forms:
        forms.append("npz")
    import numpy

    numpy.ones((4, 4)) @ numpy.ones((4, 4))
    print(f"numpy {numpy.__version__}, BLAS: {blas_kernel()}")
    data_bytes = args.rows * 784 * 4
    print(f"data: {args.rows} × 784 float32 = {data_bytes / 2**30:.2f} GiB "
          f"({'images' if args.images else 'rows'}), batch {args.batch_size}, BLAS threads "
          f"{args.threads or 'as configured'}")
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        paths = write_data(folder, args.rows, args.images, forms)
        runs = [(form, None, form) for form in forms]
        if args.before:
            (folder / "before").mkdir()
            runs.append(("npz", export(args.before, folder / "before"), f"npz @ {args.before}"))
        print(f"{'file, ermlab':<22} {'prepare s':>9} {'epoch s':>8} {'ratio':>6} "
              f"{'peak@prep':>9} {'peak':>6} {'end anon/file':>14}  (memory: × the data)")
        for form, source, label in runs:
            result = measure(paths[form], source, {"batch_size": args.batch_size}, args.threads)
            ratio = result["prepare"] / result["epoch"]
            grow = [(result[k] - result["base"]) / data_bytes for k in ("peak_prepare", "peak")]
            print(f"{label:<22} {result['prepare']:9.2f} {result['epoch']:8.2f} {ratio:6.2f} "
                  f"{grow[0]:9.2f} {grow[1]:6.2f} "
                  f"{result['anon'] / data_bytes:6.2f}/{result['file'] / data_bytes:.2f}"
                  f"   val_loss {result['val_loss']:.4f}", flush=True)


if __name__ == "__main__":
    main()
