"""Blocked, multi-threaded updates change nothing: every element sees the same arithmetic."""

import numpy as np
import pytest

from ermlab import nn, optim

CASES = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (optim.Adagrad, dict(lr=0.1)),
    (optim.Adadelta, dict()),
    (optim.RMSprop, dict(momentum=0.9, centered=True)),
    (optim.Adam, dict(amsgrad=True, weight_decay=1e-2)),
    (optim.AdamW, dict()),
    (optim.Adamax, dict()),
    (optim.NAdam, dict(decoupled_weight_decay=True, weight_decay=1e-2)),
]


def run(cls, options, threads, steps=6):
    rng = np.random.default_rng(0)
    params = [nn.Parameter(rng.standard_normal(shape).astype(np.float32), regularize=True)
              for shape in [(300, 400), (400,), (17, 5)]]
    opt = cls(params, threads=threads, **options)
    # Force splitting: small work per lane, small blocks, small minimum size.
    opt.lane_work, opt.min_parallel, opt.block_bytes = 1, 1024, 64 * 1024
    opt.fused_block_bytes = opt.block_bytes
    grads = np.random.default_rng(1)
    for step in range(steps):
        for p in params:
            p.zero_grad()
            g = grads.standard_normal(p.shape).astype(np.float32)
            g[..., : p.shape[-1] // 2] = 0 if step % 2 else g[..., : p.shape[-1] // 2]
            p.add_grad(g)
        opt.step()
    lanes = opt._cached_layout[1] if opt._cached_layout else [[None]]
    return params, opt.state_dict(), lanes


@pytest.mark.parametrize("cls, options", CASES, ids=[c.__name__ for c, _ in CASES])
def test_threads_and_blocks_give_bitwise_identical_results(cls, options):
    single, single_state, _ = run(cls, options, threads=1)
    split, split_state, lanes = run(cls, options, threads=3)
    # the threaded run really was cut: several lanes, the big weight in several blocks
    assert sum(1 for lane in lanes if lane) >= 2
    assert sum(1 for lane in lanes for i, _ in lane if i == 0) >= 2
    for a, b in zip(single, split):
        np.testing.assert_array_equal(a.data, b.data)
    for index, entries in single_state["state"].items():
        for key, value in entries.items():
            other = split_state["state"][index][key]
            if hasattr(value, "shape"):
                np.testing.assert_array_equal(value, other)
            else:
                assert value == other


@pytest.mark.parametrize("cls, options", [CASES[0], CASES[4]], ids=["SGD", "Adam"])
def test_a_step_whose_lanes_are_timed_changes_nothing_and_flushing_steps_are_not_timed(
        cls, options):
    from ermlab import threads

    def train(threads_):
        rng = np.random.default_rng(0)
        params = [nn.Parameter(rng.standard_normal(shape).astype(np.float32))
                  for shape in [(300, 600), (600,)]]
        opt = cls(params, threads=threads_, flush_every=4, **options)
        opt.lane_work, opt.min_parallel = 10**9, 1024  # every step below lane_work: tuned
        opt._lane_tuner = tuner = threads.LaneTuner(probes=1, every=3)
        timed, lanes = [], []
        record = tuner.record
        tuner.record = lambda seconds: (timed.append(seconds), record(seconds))
        grads = np.random.default_rng(1)
        for _ in range(16):
            for p in params:
                p.zero_grad()
                p.add_grad(grads.standard_normal(p.shape).astype(np.float32))
            opt.step()
            lanes.append(sum(1 for lane in opt._cached_layout[1] if lane))
        return params, opt.state_dict(), lanes, timed

    single, single_state, one_lane, _ = train(1)
    split, split_state, lanes, timed = train(2)
    assert set(one_lane) == {1} and set(lanes) == {1, 2}  # the probes ran both counts
    assert len(timed) == 12  # steps 4, 8, 12, 16 flush: not timed
    for a, b in zip(single, split):
        np.testing.assert_array_equal(a.data, b.data)
    for index, entries in single_state["state"].items():
        for key, value in entries.items():
            np.testing.assert_array_equal(value, split_state["state"][index][key])
