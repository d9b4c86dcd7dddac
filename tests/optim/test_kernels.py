"""The fused kernels (``optim._kernels``, Numba) give bitwise the NumPy path's results.

Every rule with a kernel is run twice from the same start, with the kernels on
and off (``opt.fused``), over tensors whose sizes leave vector remainders
(1, 7, 37 × 129), gradients spanning 1e-20 … 10 with exact zeros (with ε = 0,
0/0 = NaN: NaN propagates alike), for enough steps to pass a flush; parameters
and every state array must be identical.
The NumPy path is the one checked against torch.optim step by step
(``test_first_order_torch.py``), so this carries those checks over.
"""

import numpy as np
import pytest

from ermlab import nn, optim, threads
from ermlab.optim import inplace, prepared

pytest.importorskip("numba", reason="the fused kernels need Numba: pip install numba")


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    """The kernels loaded whatever ``ERMLAB_FUSED`` says in the environment."""
    from ermlab.optim import _kernels as kernels

    monkeypatch.delenv("ERMLAB_FUSED", raising=False)
    monkeypatch.setattr(inplace, "_loaded_kernels", kernels)

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, momentum_form="classic")),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01,
                 momentum_form="classic")),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, momentum_form="classic")),
    ("HeavyBall", dict(lr=0.1, momentum=0.7)),
    ("NAGC", dict(lr=0.1)),
    ("NAGSC", dict(lr=0.1, strong_convexity=0.5)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1)),
    ("Adagrad", dict(initial_accumulator_value=0.5, eps=1e-3)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.2, rho=0.5, eps=1e-3, weight_decay=0.1)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.003, momentum=0.9, weight_decay=0.1)),
    ("RMSprop", dict(centered=True, momentum=0.5, alpha=0.9)),
    ("RMSprop", dict(centered=True, alpha=0.3, eps_inside_sqrt=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.003, betas=(0.3, 0.999), eps=0.0)),
    ("Adam", dict(lr=0.003, betas=(0.7, 0.9), weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.5, amsgrad=True)),
    ("Adamax", dict()),
    ("Adamax", dict(lr=0.01, betas=(0.3, 0.5), eps=1e-3, weight_decay=0.1)),
    ("NAdam", dict()),
    ("NAdam", dict(weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, momentum_decay=0.1, betas=(0.7, 0.5), weight_decay=0.1,
                   decoupled_weight_decay=True)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'defaults'}" for n, o in CASES]
SHAPES = [(37, 129), (7,), (1,)]
STEPS = 18  # the flush runs at step 16


def run(name, options, dtype, fused):
    rng = np.random.default_rng(0)
    params = [nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]
    opt = getattr(optim, name)(params, **options)
    opt.threads, opt.fused = 1, fused
    grads = np.random.default_rng(1)
    for _ in range(STEPS):
        for p in params:
            scale = 10.0 ** grads.integers(-20, 2, p.shape)
            g = grads.standard_normal(p.shape) * scale * (grads.random(p.shape) > 0.2)
            p.grad[...] = g.astype(dtype)
        with np.errstate(divide="ignore", invalid="ignore"):  # ε = 0: 0/0 where g = 0
            opt.step()
    return params, opt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_fused_kernel_is_the_numpy_path_bit_for_bit(name, options, dtype):
    fused, fused_opt = run(name, options, dtype, True)
    plain, plain_opt = run(name, options, dtype, False)
    assert fused_opt.kernels(fused[0].data) is not None  # the kernels really ran
    assert plain_opt.kernels(plain[0].data) is None
    # ... in the step itself: each of its blocks holds the flat views its kernel took
    assert all(type(block.flats) is dict for block in blocks(fused_opt))
    assert not any(type(block.flats) is dict for block in blocks(plain_opt))
    for p, q in zip(fused, plain):
        np.testing.assert_array_equal(p.data, q.data, err_msg=f"{name}{options} θ")
        for key, value in plain_opt.state[q].items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(fused_opt.state[p][key], value,
                                              err_msg=f"{name}{options} {key}")
    start = np.random.default_rng(0).standard_normal(SHAPES[0]).astype(dtype)
    assert np.nanmax(np.abs(fused[0].data - start)) > 1e-3  # the comparison saw real updates


def blocks(opt):
    """The blocks of the optimizer's last step (its cached layout)."""
    return [block for lane in opt._cached_layout[1] for _, block in lane]


def test_kernels_need_contiguous_numpy_arrays_of_one_float_dtype():
    opt = optim.Adam([nn.Parameter(np.zeros((4, 6), np.float32))])
    a = np.zeros((4, 6), np.float32)
    assert opt.kernels(a, a.copy()) is not None
    assert opt.kernels(a[:, ::2], a[:, ::2].copy()) is None  # not contiguous: NumPy path
    assert opt.kernels(a, a.astype(np.float64)) is None  # mixed dtypes
    assert opt.kernels(a.astype(np.float16)) is None  # no kernel for float16
    assert opt.kernels(a, a.reshape(6, 4)) is None  # other shape
    opt.fused = False
    assert opt.kernels(a) is None


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_turning_the_kernels_off_between_steps_takes_effect(name, monkeypatch):
    """Whether the kernels run is asked at each step: setting ``opt.fused`` takes effect at
    the next one (each block keeps only its arrays' flat views)."""
    from ermlab.optim import _kernels

    kernel = "sgd" if name == "SGD" else "adam"
    calls = []
    real = getattr(_kernels, kernel)
    monkeypatch.setattr(_kernels, kernel, lambda *a: calls.append(1) or real(*a))
    param = nn.Parameter(np.ones((300, 300), np.float32))
    opt = getattr(optim, name)([param], lr=0.1)
    opt.threads = 1
    for fused, expected in ((True, 2), (False, 2), (True, 4)):
        opt.fused = fused
        for _ in range(2):
            param.grad[...] = 1.0
            opt.step()
        assert len(calls) == expected, (fused, calls)
    assert np.all(np.isfinite(param.data)) and np.all(param.data < 1)


def test_non_contiguous_parameter_takes_the_numpy_path():
    """A parameter viewing every other column of a buffer: the ufunc path (two roundings
    in θ + (−γ)d, where the kernel fuses them), within an ulp of the fused step on a
    contiguous copy; the other columns untouched."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((5, 8)).astype(np.float32)
    kept, start = base[:, 1::2].copy(), base[:, ::2].copy()
    view = nn.Parameter(base[:, ::2])
    whole = nn.Parameter(np.ascontiguousarray(base[:, ::2]))
    g = rng.standard_normal((5, 4)).astype(np.float32)
    assert not view.data.flags.c_contiguous and view.data.base is base
    for p in (view, whole):
        p.grad[...] = g
        optim.Adam([p], lr=0.1).step()
    np.testing.assert_array_max_ulp(view.data, whole.data, maxulp=1)
    np.testing.assert_allclose(view.data, start - 0.1 * np.sign(g), atol=1e-6)  # Adam's step 1
    np.testing.assert_array_equal(base[:, 1::2], kept)


def test_env_variable_turns_the_kernels_off_at_each_call(monkeypatch):
    """``ERMLAB_FUSED=0`` is read at each call: set after the kernels were loaded it turns
    them off, and a first call made under it does not keep them off once it is unset
    (as when one test sets it for itself: every later test would run the NumPy path)."""
    opt = optim.Adam([nn.Parameter(np.zeros(3, np.float32))])
    z = np.zeros(3, np.float32)
    assert opt.kernels(z) is not None
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    assert opt.kernels(z) is None
    monkeypatch.setenv("ERMLAB_FUSED", "1")
    assert opt.kernels(z) is not None
    monkeypatch.setattr(inplace, "_loaded_kernels", None)  # not imported yet
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    assert opt.kernels(z) is None
    monkeypatch.delenv("ERMLAB_FUSED")
    assert opt.kernels(z) is not None


@pytest.mark.parametrize("name", ["Adam", "NAdam", "RMSprop", "Adagrad"])
def test_a_fused_step_counts_one_pass_per_element_for_its_lanes(kernels_on, monkeypatch, name):
    """A fused rule is one pass: over 0.5M parameters whether a second lane pays is timed
    (``threads.LaneTuner``), while the NumPy path's passes surely earn it."""
    lanes = []
    original, replay = inplace.InPlaceOptimizer._layout, prepared.PreparedStep.run

    def layout(self, tasks, threads, *args):
        lanes.append(threads)
        return original(self, tasks, threads, *args)

    def run(self, opt, kernels):  # a replayed step runs the lanes it was made with
        done = replay(self, opt, kernels)
        lanes.extend([len(self.lanes)] * done)
        return done

    monkeypatch.setattr(inplace.InPlaceOptimizer, "_layout", layout)
    monkeypatch.setattr(prepared.PreparedStep, "run", run)
    param = nn.Parameter(np.zeros(500_000, np.float32))
    param.grad = np.full(500_000, 0.5, np.float32)
    steps = 8 + threads.WAKE_RUNS + 6  # the tuner's warm-up, then into its probe's one lane
    asked = []
    for fused in (True, False):
        opt = getattr(optim, name)([param], lr=0.01, threads=2)
        opt.flush_every = 0  # every step timed (Adagrad's state never flushes anyway)
        opt.fused = fused
        for _ in range(steps):
            opt.step()
        asked.append(opt._lane_tuner.key is not None)
    assert asked == [True, False]
    # the fused rule's warm-up on 1 lane, then its probe: 2 lanes, then 1
    assert lanes == [1] * 8 + [2] * (threads.WAKE_RUNS + 4) + [1, 1] + [2] * steps


@pytest.mark.parametrize("name, options", [("Adam", {}), ("NAdam", {}),
                                           ("Adagrad", {"lr_decay": 0.1})])
def test_parameters_with_other_step_scalars_get_their_own_kernel_arguments(name, options):
    """Parameters of one group share one ``fused_kernel`` answer in a step only where their
    scalars are equal: a parameter whose step count differs (its bias corrections differ)
    is updated as on its own, bit for bit the NumPy path."""
    rng = np.random.default_rng(5)
    start = [rng.standard_normal(n).astype(np.float32) for n in (300, 70, 301)]
    grads = [rng.standard_normal(n).astype(np.float32) for n in (300, 70, 301)]
    results = []
    for fused in (True, False):
        params = [nn.Parameter(a.copy()) for a in start]
        opt = getattr(optim, name)(params, lr=0.1, **options)
        opt.threads, opt.fused = 1, fused
        for step in range(3):
            for p, g in zip(params, grads, strict=True):
                p.grad[...] = g * (step + 1)
            opt.step()
            if step == 0:
                opt.state[params[1]]["step"] += 4  # its scalars now differ from the others'
        results.append([p.data.copy() for p in params])
    for fused, plain in zip(*results, strict=True):
        np.testing.assert_array_equal(fused, plain)


def test_setting_ermlab_fused_between_steps_takes_effect(monkeypatch):
    """``ERMLAB_FUSED`` is read at each step: set between steps, it turns the kernels off
    and on again."""
    from ermlab.optim import _kernels

    calls = []
    real = _kernels.adam
    monkeypatch.setattr(_kernels, "adam", lambda *a: calls.append(1) or real(*a))
    param = nn.Parameter(np.ones(1000, np.float32))
    opt = optim.Adam([param], lr=0.1, threads=1)
    for value, expected in (("1", 1), ("0", 1), ("1", 2)):
        monkeypatch.setenv("ERMLAB_FUSED", value)
        param.grad[...] = 1.0
        opt.step()
        assert len(calls) == expected, (value, calls)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("below", [None, 1e-30, 3e-7, 0.5])
def test_flush_kernel_is_flush_tiny_bit_for_bit(dtype, below):
    """The kernels' flush (``_kernels.flush``, at a fused step's due steps) zeroes what
    ``inplace.flush_tiny_`` zeroes, to +0, for the dtype's τ and for thresholds that the
    dtype cannot hold exactly; NaN and ±∞ stay."""
    from ermlab.optim import _kernels

    tiny = np.finfo(dtype).tiny
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(1000) * 10.0 ** rng.integers(-45, 2, 1000)).astype(dtype)
    specials = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, tiny, -tiny, tiny / 2,
                -tiny / 4, np.nextafter(tiny, 0), 1e-30, -1e-30, 3e-7, -3e-7, 0.5, -0.5]
    x[:len(specials)] = np.array(specials).astype(dtype)
    if below is not None:  # values next to the threshold as the dtype holds it
        edge = dtype(below)
        x[-4:] = [edge, np.nextafter(edge, 0), np.nextafter(edge, 1), -edge]
    expected = inplace.flush_tiny_(x.copy(), below)
    got = x.copy()
    _kernels.flush(got, got.dtype.type(inplace.subnormal_threshold(got.dtype, below)))
    assert got.tobytes() == expected.tobytes()  # +0, not −0, and NaN's bits kept
    assert np.sum(expected == 0) > np.sum(x == 0)  # the flush zeroed something


def test_a_fused_step_flushes_with_the_kernel(monkeypatch):
    """A due step of a fused rule flushes its state arrays by the kernel, each block's flat
    view, and allocates no scratch buffer or mask for it (the NumPy flush's)."""
    from ermlab.optim import _kernels

    flushed = []
    real = _kernels.flush
    monkeypatch.setattr(_kernels, "flush", lambda x, t: flushed.append(x.size) or real(x, t))
    param = nn.Parameter(np.ones((300, 300), np.float32))
    opt = optim.Adam([param], lr=0.1, flush_every=2)
    opt.threads = 1
    for step in range(1, 5):
        param.grad[...] = 1e-30
        opt.step()
        assert len(flushed) == 2 * (step // 2)  # m and v (ε = 1e-8 hides v) at steps 2, 4
    assert set(flushed) == {param.data.size}
    assert not opt._scratch and not opt._masks
