"""Distributed strategies on a Fashion-MNIST MLP: throughput, time to accuracy, bytes per step.

For 1 and 2 workers, every strategy of ``ermlab.distributed`` trains the same
MLP (``--sizes``, default 784-256-10, ReLU) with plain SGD (``--lr``) and the
same *per-worker* batch b (``--batch``) on ``--train`` Fashion-MNIST training
images (pixels / 255 minus the training mean), validated after every epoch on
``--val`` test images:

* ermlab single process (the Trainer's own step, batch b);
* SyncDataParallel in process (the Trainer draws the global batch k·b; k shards);
* Downpour in process (n_fetch = n_push = 1; each Trainer batch goes to one worker);
* EASGD in process (asynchronous, τ = ``--tau``, α = 0.9/k, η = lr);
* OnRay(SyncDataParallel / Downpour / EASGD) on a local Ray started by the strategy
  (``num_cpus=2``); its start is part of the first epoch's time; ``steps_per_call``
  automatic (a call computes ≥ 20 ms); the "1 step/call" rows (k = 2) send one
  mini-batch per actor call instead, in the same run;
* Hogwild! (worker processes on one shared parameter vector, batch b each; the
  spawn of the workers, ~1 s, is part of every epoch);
* PyTorch: the same ``torch.nn`` MLP and SGD, 1 process, and DDP with 2 processes
  (``torch.multiprocessing.spawn``, gloo backend on CPU, MASTER_ADDR=127.0.0.1,
  each rank a disjoint half of every epoch's permutation, batch b per rank,
  one thread per rank; 1 process uses 2 threads).

Columns: examples/s of the fastest epoch after the first (training examples
over the epoch's training time, validation excluded; steady state, and the
least disturbed by other programs on a shared machine), and the time to reach
``--target`` validation accuracy (cumulative training time at the end of the
first epoch whose validation accuracy reaches it, start-up included: Ray's start,
Hogwild's spawns, DDP's process group; "—" if never), the final validation
accuracy, "busy": the machine's busy cores during the run from /proc/stat (ours
and everybody else's; 2 = both cores), and every epoch's training seconds.
In-process strategies run their workers one after another in one
process: they simulate the algorithms (staleness, averaging) but cannot be
faster than one process.

A second table gives the bytes each algorithm moves per worker step, from the
parameter count P (float32: 4P bytes), and what that would mean for 100
workers on 10 GbE (1.25 GB/s a link), each worker running at the step rate
measured here for the single-process ermlab run:

* parameter server (sync through a server, Downpour n_fetch = n_push = 1): each
  worker pulls θ (4P) and pushes g (4P) every step; the server's link carries
  N·8P per round of steps, so it bounds each worker to 1.25e9 / (N·8P) steps/s
  (S server shards divide that load by S);
* EASGD: every τ steps a worker sends x (4P) and gets the elastic δ back (4P):
  8P/τ per step, N·8P/τ at the server;
* ring all-reduce (DDP): each worker sends and receives 2(N−1)/N · 4P a step on
  its own link, whatever N: the network stops being the bottleneck as N grows
  (latency, 2(N−1) messages a step, then matters);
* Hogwild!: shared memory in one machine; no network at all (it writes 4P bytes
  of the memory bus per step for a dense model).

Run by hand (never a test), on a quiet machine, with the OpenBLAS overrides unset
(/work/shared/PERFORMANCE.md):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/distributed.py \\
        [--train 20000] [--val 2000] [--epochs 4] [--batch 64] [--lr 0.05] [--target 0.8] \\
        [--no-ray] [--no-torch] [--only Ray,PyTorch]

Measured before (one actor call per mini-batch, SyncDataParallel reduced at the
driver), one run (2026-11-30, Intel Xeon @ 2.80GHz under KVM, 2 CPUs, OpenBLAS
SkylakeX, 2 threads; numpy float32; torch 2.13.0 CPU; Ray 2.60.0; defaults: 20k train,
2k validation, 4 epochs, b = 64, SGD lr 0.05, EASGD τ = 4; load average 1.74 before
(falling after another helper's test suite), 2.66 after; 163 s in all). k: workers;
×1: rate over the single process; s→.80: seconds to 0.80 validation accuracy;
"in loop": Hogwild!'s examples/s inside the workers' loops, spawn excluded::

    algorithm             k   ex/s    ×1  s→.80    acc busy  epoch s
    ermlab single process 1  63946  1.00   0.35  .8450 1.87  0.35 0.39 0.31 0.40
    sync (in process)     1  50197  0.78   0.56  .8450 2.00  0.56 0.40 0.42 0.45
    sync (in process)     2  38900  0.61   1.02  .8330 2.00  0.51 0.51 0.53 0.52
    Downpour (in process) 1  46939  0.73   0.56  .8450 2.00  0.56 0.64 0.56 0.43
    Downpour (in process) 2  36975  0.58   0.67  .8440 2.00  0.67 0.54 0.66 0.66
    EASGD (in process)    1  45936  0.72   0.87  .8385 2.00  0.44 0.44 0.46 0.53
    EASGD (in process)    2  53795  0.84   1.41  .8250 2.00  0.46 0.51 0.43 0.37
    sync on Ray           1   6557  0.10   7.52  .8450 1.24  7.52 3.25 3.52 3.05
    sync on Ray           2   9139  0.14   9.72  .8330 1.41  7.23 2.49 2.33 2.19
    Downpour on Ray       1   4193  0.07   8.57  .8450 1.25  8.57 5.17 4.77 4.81
    Downpour on Ray       2   3703  0.06   9.47  .8430 1.51  9.47 5.40 7.02 5.51
    EASGD on Ray          1   7214  0.11  12.76  .8385 1.30  8.93 3.84 2.97 2.77
    EASGD on Ray          2  11523  0.18  10.62  .8245 1.42  7.03 1.86 1.74 1.76
    Hogwild!              1  22014  0.34   1.13  .8525 1.12  1.13 0.91 0.96 1.06 (39953 in loop)
    Hogwild!              2  18662  0.29   1.11  .8500 1.44  1.11 1.13 1.15 1.07 (68968 in loop)
    PyTorch (1 process)   1  38608  0.60   1.11  .8410 1.23  0.59 0.52 0.60 0.54
    PyTorch DDP gloo      2  20642  0.32   7.54  .8135 1.46  4.46 1.11 1.00 0.97
    all runs: 163 s; load average 2.66 after

    bytes per worker step, P = 203,530 (4P = 0.814 MB); 100 workers at the measured
    999 steps/s (ermlab single process, b = 64), 10 GbE = 1.25 GB/s a link:
    algorithm                  MB/step/wkr busiest MB    GB/s   ÷1.25 max st/s
    sync via parameter server        1.628     162.82  162.69 130.15×      7.7
    Downpour n_fetch=n_push=1        1.628     162.82  162.69 130.15×      7.7
    EASGD τ=4                        0.407      40.71   40.67  32.54×     30.7
    ring all-reduce (DDP)            1.612       1.61    1.61   1.29×    775.5
    Hogwild! (one machine)           0.000       0.00    0.00   0.00×      inf

Reading it. On 2 cores nothing beats the single process (63.9k ex/s), which already
keeps both cores busy with 2 BLAS threads; the in-process strategies simulate k
workers in one process at a cost of 16–42 % (θ copies into the replicas, shard
bookkeeping). On Ray every step is actor calls that carry θ and g (0.8 MB each)
through the object store: 9–15 ms a step against ~1 ms of compute in the single
process, so the steady rates are 6–18 % of it, and the local Ray start adds ~4–6 s
to the first epoch, which dominates the time to 0.80; 2 workers beat 1 on Ray for
sync (1.39×) and EASGD (1.60×), not for Downpour (0.88×: its 2 workers pull and push
through the one server actor every step). Hogwild! on this dense MLP: 2 workers ran
1.73× one worker inside their loops (69.0k vs 40.0k ex/s, one BLAS thread each), but
the ~0.6 s spawn of the workers every epoch outweighs a 0.3–0.5 s epoch, so the
epoch rate is 0.29–0.34× the single process (an earlier run, during another helper's
test suite, gave 28.7k vs 42.1k in the loops: every step writes all 203k shared
parameters, and the ratio moves with the load; the sparse problem is
benchmarks/hogwild.py). PyTorch with 1 process ran 38.6k ex/s (0.60× ermlab); DDP
over gloo with 2 ranks of one thread ran 0.53× that (an all-reduce of 0.8 MB over
loopback every 1–2 ms step on 2 shared cores), and its first epoch carries ~3.5 s of
spawn and process-group start. Every run reaches 0.81–0.85 validation accuracy in 4
epochs; the 2-worker runs end slightly lower (sync 0.833 vs 0.845, EASGD 0.825 vs
0.839 with 1 worker; sync with 2 workers takes half the steps). The bytes table: one
parameter server for 100 workers needs 130× a 10 GbE link at this step rate (≥ 131
shards, or 7.7 steps/s a worker), EASGD τ = 4 needs 33×, a ring all-reduce 1.29× a
worker's own link whatever N (larger batches or fp16 gradients bring it under).

Measured after (calls of several steps, up to two calls per worker in flight,
SyncDataParallel by a ring all-reduce between the replicas, which each apply the
update): ``--only Ray --no-torch``, 2026-11-30 03:44–03:52, same machine but
**heavily loaded** (load average 13.7 before, 20.9 after, on 2 cores: other
helpers' test suites and benchmarks). Under that load the single process (2
BLAS threads) fell to 1.1k ex/s (63.9k quiet), so the ×1 ratios of this run say
nothing about a quiet machine; the rows compare with each other::

    algorithm                    k   ex/s  s→.80    acc  epoch s
    ermlab single process        1   1092  30.25  .8450  30.25 29.66 18.32 21.85
    sync on Ray                  1  11360  21.98  .8450  21.98 1.91 1.98 1.76
    sync on Ray                  2   4549  32.68  .8330  27.46 5.22 4.95 4.40
    Downpour on Ray              1   4845  26.32  .8450  26.32 4.13 4.59 4.14
    Downpour on Ray              2   4547  25.90  .8435  25.90 4.40 4.99 5.24
    EASGD on Ray                 1   9830  24.04  .8385  22.00 2.05 2.05 2.03
    EASGD on Ray                 2   8933  35.14  .8250  30.51 2.24 2.39 2.54
    sync on Ray, 1 step/call     2   4909  35.03  .8330  30.20 4.84 4.94 4.07
    Downpour on Ray, 1 step/call 2   4857  32.96  .8445  32.96 4.12 4.61 5.56
    EASGD on Ray, 1 step/call    2   7614  38.05  .8225  32.64 2.74 2.67 2.63

(An earlier run under the same load, with PyTorch: single 1144, sync k=1/2 10581 /
5009, Downpour 4055 / 4247, EASGD 11679 / 9367, PyTorch 1 process 1036, DDP gloo
2 ranks 5247 ex/s.) Reading it. Where a worker talks to nobody between
mini-batches — sync with one worker (no all-reduce), EASGD (one elastic move every
τ = 4 steps) — the Ray rows ran 9.8–11.4k ex/s under this load, 1.5–1.7× their
quiet-machine rates before (6.6k, 7.2k): the per-call cost is gone from them (Ray
workers also run one BLAS thread each, which the load hurts less than the single
process's two). Calls of several steps against one step a call, same run, k = 2:
EASGD 1.17×, sync 0.93×, Downpour 0.94× — with two calls per worker in flight the
call latency is hidden either way, and what limits sync and Downpour now is the
communication *inside* each step, which no batching of calls removes: sync's ring
all-reduce (2(k−1) = 2 transfers of a 0.4 MB chunk per step, actor to actor
through the object store) and Downpour's pull and push of θ and g (0.8 MB each)
through the server actor every step. A Downpour step that pushes and fetches now
does both in one round trip (``push_pull``): ``--only "Downpour on Ray"``,
04:04–04:10, load average 21.7 before, 30.3 after (single process 466 ex/s):
Downpour on Ray k = 1 5187, k = 2 5659 ex/s (+7 %, +24 % over the table above
under more load), k = 2 at 1 step/call 4993. Every run reaches 0.82–0.85
validation accuracy in 4 epochs, as before.

Quieter re-run, the whole benchmark, 04:37–04:41 (load average 0.87 before, 3.61
after; some noise still: the single process's 2nd epoch took 8.6 s, PyTorch's 1
process ran only 2.9k ex/s), Ray rows and the reference rows::

    algorithm                    k   ex/s    ×1  s→.80    acc  epoch s
    ermlab single process        1  50772  1.00   5.34  .8450  5.34 8.61 0.52 0.39
    sync on Ray                  1  35455  0.70   5.13  .8450  5.13 0.64 0.56 0.59
    sync on Ray                  2   6921  0.14  11.27  .8330  8.38 2.89 4.53 4.52
    Downpour on Ray              1   6149  0.12   9.70  .8450  9.70 3.25 3.40 3.53
    Downpour on Ray              2   8011  0.16   6.95  .8440  6.95 2.93 2.95 2.50
    EASGD on Ray                 1  15870  0.31   6.45  .8385  5.19 1.26 1.31 1.49
    EASGD on Ray                 2  18099  0.36   8.68  .8235  6.45 1.12 1.11 1.20
    sync on Ray, 1 step/call     2   4865  0.10  11.66  .8330  7.55 4.11 5.05 4.51
    Downpour on Ray, 1 step/call 2   5741  0.11   8.81  .8435  8.81 3.90 3.48 3.85
    EASGD on Ray, 1 step/call    2   9806  0.19  15.31  .8230  9.82 2.97 2.52 2.04
    PyTorch DDP gloo             2  15188  0.30  11.16  .8135  7.09 1.36 1.32 1.39

Against the quiet table before: sync on Ray with 1 worker 5.4× (35.5k vs 6.6k
ex/s, 0.70× the single process: nothing but the calls left), Downpour 1.5× / 2.2×
(k = 1 / 2), EASGD 2.2× / 1.6×; calls of several steps against one step a call in
the same run (k = 2): sync 1.42×, Downpour 1.40×, EASGD 1.85×. Sync with 2
workers is 0.76× its rate before (6.9k vs 9.1k): the ring all-reduce moves 2
chunks of 0.4 MB per step actor to actor through the object store, where the
reduce at the driver moved the same bytes in one round; it is the algorithm that
scales (each link carries 2(k−1)/k · 4P whatever k), not the faster one on 2
local cores. Against DDP over gloo (2 ranks): EASGD on Ray 1.19×, Downpour 0.53×,
sync 0.46×.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

# -- data ---------------------------------------------------------------------------------


def load_data(train: int, val: int):
    """(x, y, x_val, y_val): float32 pixels / 255 minus the training mean, int64 labels."""
    from ermlab.data import load

    d = load("fashion-mnist")
    x = np.asarray(d.x_train[:train], dtype=np.float32).reshape(train, -1)
    xv = np.asarray(d.x_test[:val], dtype=np.float32).reshape(val, -1)
    if x.max() > 1:
        x, xv = x / 255, xv / 255
    mean = x.mean(axis=0)
    return ((x - mean).astype(np.float32), np.asarray(d.y_train[:train], dtype=np.int64),
            (xv - mean).astype(np.float32), np.asarray(d.y_test[:val], dtype=np.int64))


# -- ermlab runs --------------------------------------------------------------------------


def ermlab_run(name: str, workers: int, data, args) -> dict:
    """Train with the named strategy; per-epoch training times and validation accuracies."""
    from ermlab import losses, nn, optim
    from ermlab.distributed import EASGD, Downpour, Hogwild, OnRay, SyncDataParallel
    from ermlab.training import Trainer

    x, y, xv, yv = data
    k, b = workers, args.batch
    strategies = {
        "ermlab single process": lambda: None,
        "sync (in process)": lambda: SyncDataParallel(workers=k),
        "Downpour (in process)": lambda: Downpour(workers=k),
        "EASGD (in process)": lambda: EASGD(workers=k, tau=args.tau),
        "sync on Ray": lambda: OnRay(SyncDataParallel(workers=k), num_cpus=2),
        "Downpour on Ray": lambda: OnRay(Downpour(workers=k), num_cpus=2),
        "EASGD on Ray": lambda: OnRay(EASGD(workers=k, tau=args.tau), num_cpus=2),
        "sync on Ray, 1 step/call": lambda: OnRay(SyncDataParallel(workers=k), num_cpus=2,
                                                  steps_per_call=1),
        "Downpour on Ray, 1 step/call": lambda: OnRay(Downpour(workers=k), num_cpus=2,
                                                      steps_per_call=1),
        "EASGD on Ray, 1 step/call": lambda: OnRay(EASGD(workers=k, tau=args.tau), num_cpus=2,
                                                   steps_per_call=1),
        "Hogwild!": lambda: Hogwild(k),
    }
    model = nn.mlp(args.sizes, rng=0)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(),
                      optim.SGD(model.parameters(), lr=args.lr), rng=1,
                      strategy=strategies[name]())
    batch = k * b if name.startswith("sync") else b
    history = trainer.fit(x, y, epochs=args.epochs, batch_size=batch, validation_data=(xv, yv))
    return {"times": list(history["time"]), "val_accuracy": list(history["val_accuracy"]),
            "in_loop": history.get("examples_per_second", [None])[-1]}


# -- PyTorch runs -------------------------------------------------------------------------


def _torch_worker(rank: int, world: int, port: int, data, args, out: str) -> None:
    """One rank: the same MLP and SGD; DDP over gloo when world > 1."""
    import torch
    import torch.distributed as dist
    from common import torch_mlp

    torch.set_num_threads(max(1, 2 // world))
    x, y, xv, yv = (torch.from_numpy(a) for a in data)
    torch.manual_seed(0)
    model = torch_mlp(args.sizes)
    start = time.perf_counter()
    if world > 1:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        model = torch.nn.parallel.DistributedDataParallel(model)
    setup = time.perf_counter() - start
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(1)
    times, accs = [], []
    n, b = len(x), args.batch
    for _ in range(args.epochs):
        start = time.perf_counter()
        order = torch.randperm(n, generator=gen)[rank::world]  # same permutation on all ranks
        steps = len(order) // b + (len(order) % b > 0)
        if world > 1:  # equal step counts, as DistributedSampler(drop_last=False) pads
            steps = (n // world + b - 1) // b
        for s in range(steps):
            index = order[s * b:(s + 1) * b]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[index]), y[index]).backward()
            opt.step()
        times.append(time.perf_counter() - start)
        if rank == 0:
            with torch.no_grad():
                accs.append(float((model(xv).argmax(1) == yv).float().mean()))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        times[0] += setup
        with open(out, "w") as f:
            json.dump({"times": times, "val_accuracy": accs}, f)


def torch_run(world: int, data, args) -> dict:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        if world == 1:
            _torch_worker(0, 1, port, data, args, out)
        else:
            mp.spawn(_torch_worker, args=(world, port, data, args, out), nprocs=world, join=True)
        with open(out) as f:
            return json.load(f)


# -- report -------------------------------------------------------------------------------


def summarize(result: dict, n: int, target: float) -> tuple[float, float | None, float]:
    """(examples/s of the fastest epoch after the first, time to target or None, final
    accuracy)."""
    times, accs = result["times"], result["val_accuracy"]
    reach = next((i for i, a in enumerate(accs) if a >= target), None)
    steady = min(times[1:]) if len(times) > 1 else times[0]
    return n / steady, None if reach is None else sum(times[:reach + 1]), accs[-1]


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def bytes_table(p: int, step_rate: float, args) -> None:
    """Bytes per worker step, and the 100-worker, 10 GbE projection."""
    link, n = 1.25e9, 100
    w = 4 * p
    tau = args.tau
    print(f"\nbytes per worker step, P = {p:,} parameters (4P = {w / 1e6:.3f} MB float32); "
          f"projection: {n} workers, 10 GbE = {link / 1e9:.2f} GB/s a link, each worker at "
          f"{step_rate:.0f} steps/s (measured, ermlab single process, batch {args.batch})")
    rows = [
        ("sync via parameter server", 2 * w, f"pull θ {w / 1e6:.3f} MB + push g "
         f"{w / 1e6:.3f} MB", n * 2 * w, "server link"),
        ("Downpour n_fetch=n_push=1", 2 * w, "pull θ + push g every step", n * 2 * w,
         "server link"),
        (f"EASGD τ={tau}", 2 * w / tau, f"send x + get δ every {tau} steps", n * 2 * w / tau,
         "server link"),
        ("ring all-reduce (DDP)", 2 * (n - 1) / n * w, f"send + receive 2(N−1)/N·4P, N={n}",
         2 * (n - 1) / n * w, "each worker's link"),
        ("Hogwild! (one machine)", 0.0, "shared memory: no network (4P on the memory bus)",
         0.0, "—"),
    ]
    print(f"{'algorithm':28s} {'MB/step/worker':>14s} {'busiest link MB/step':>20s} "
          f"{'GB/s needed':>11s} {'vs 1.25 GB/s':>12s} {'max steps/s/worker':>18s}")
    for name, per_worker, how, busiest, where in rows:
        need = busiest * step_rate
        ratio = need / link
        cap = link / busiest if busiest else float("inf")
        print(f"{name:28s} {per_worker / 1e6:>14.3f} {busiest / 1e6:>20.2f} "
              f"{need / 1e9:>11.2f} {ratio:>11.2f}× {cap:>18.1f}   ({how}; bottleneck: {where})")
    print(f"worked: parameter server, {n} workers × 8P = {n * 2 * w / 1e6:.1f} MB per round × "
          f"{step_rate:.0f} steps/s = {n * 2 * w * step_rate / 1e9:.1f} GB/s through one server "
          f"link of 1.25 GB/s: {n * 2 * w * step_rate / link:.0f}× over; it needs ≥ "
          f"{int(np.ceil(n * 2 * w * step_rate / link))} server shards, or each worker waits "
          f"down to {link / (n * 2 * w):.1f} steps/s. Ring all-reduce moves "
          f"{2 * (n - 1) / n * w / 1e6:.2f} MB a link per step = "
          f"{2 * (n - 1) / n * w * step_rate / 1e9:.2f} GB/s at {step_rate:.0f} steps/s, "
          f"independent of N.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--val", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="per-worker batch b")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--tau", type=int, default=4, help="EASGD communication period")
    parser.add_argument("--target", type=float, default=0.80)
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split("-")],
                        default=[784, 256, 10])
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--only", type=lambda s: s.split(","), default=None,
                        help="run only the algorithms whose name contains one of these "
                             "comma-separated words (the single process always runs)")
    args = parser.parse_args()

    import threadpoolctl

    blas = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads"))
            for i in threadpoolctl.threadpool_info()]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"CPU {cpu}, {os.cpu_count()} CPUs; BLAS {blas}; load average "
          f"{os.getloadavg()[0]:.2f} before")
    data = load_data(args.train, args.val)
    p = sum(a * b + b for a, b in zip(args.sizes[:-1], args.sizes[1:]))
    print(f"MLP {'-'.join(map(str, args.sizes))} ({p:,} parameters), SGD lr {args.lr}, "
          f"per-worker batch {args.batch}, {args.train} train / {args.val} validation images, "
          f"{args.epochs} epochs, target validation accuracy {args.target}")

    runs = [("ermlab single process", 1)]
    for name in ("sync (in process)", "Downpour (in process)", "EASGD (in process)"):
        runs += [(name, 1), (name, 2)]
    if not args.no_ray:
        for name in ("sync on Ray", "Downpour on Ray", "EASGD on Ray"):
            runs += [(name, 1), (name, 2)]
        runs += [(f"{name} on Ray, 1 step/call", 2) for name in ("sync", "Downpour", "EASGD")]
    runs += [("Hogwild!", 1), ("Hogwild!", 2)]
    if not args.no_torch:
        runs += [("PyTorch (1 process)", 1), ("PyTorch DDP gloo", 2)]
    if args.only:
        runs = [run for run in runs if run[0] == "ermlab single process"
                or any(word in run[0] for word in args.only)]

    print(f"\n{'algorithm':28s} {'workers':>7s} {'examples/s':>10s} {'vs single':>9s} "
          f"{'s to ' + format(args.target, '.2f'):>9s} {'final acc':>9s} {'busy':>5s} "
          f"{'epoch s':>18s}")
    single_rate = None
    step_rate = None
    total = time.perf_counter()
    for name, k in runs:
        before = busy_jiffies()
        if name.startswith("PyTorch"):
            result = torch_run(k, data, args)
        else:
            result = ermlab_run(name, k, data, args)
        after = busy_jiffies()
        busy = (after[0] - before[0]) / max(after[1] - before[1], 1) * (os.cpu_count() or 1)
        rate, reach, acc = summarize(result, args.train, args.target)
        if single_rate is None:
            single_rate, step_rate = rate, rate / args.batch
        epochs = " ".join(f"{t:.2f}" for t in result["times"])
        note = (f"  (in the workers' loops, spawn excluded: {result['in_loop']:.0f} ex/s)"
                if result.get("in_loop") else "")
        print(f"{name:28s} {k:>7d} {rate:>10.0f} {rate / single_rate:>8.2f}× "
              f"{'—' if reach is None else format(reach, '.2f'):>9s} {acc:>9.4f} {busy:>5.2f} "
              f"{epochs:>18s}"
              f"{note}", flush=True)
    print(f"all runs: {time.perf_counter() - total:.0f} s; load average "
          f"{os.getloadavg()[0]:.2f} after")
    bytes_table(p, step_rate, args)


if __name__ == "__main__":
    main()
