"""The accountant's ε equals dp-accounting's own accountants composed step by step."""

import math
import sys

import pytest

dpa = pytest.importorskip("dp_accounting",
                          reason='accountant absent: pip install "ermlab[privacy]"')

from ermlab.privacy import calibrate_noise, epsilon  # noqa: E402


def reference(accountant, sigma, q, steps, delta, one_by_one=False):
    """dp-accounting's ε: ``steps`` compositions (one call each, or one call with a count)."""
    event = dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))
    for _ in range(steps if one_by_one else 1):
        accountant.compose(event, count=1 if one_by_one else steps)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("sigma, q, steps, delta", [
    (1.1, 256 / 60000, 235, 1e-5), (0.8, 0.02, 150, 1e-6), (3.0, 0.5, 12, 1e-3)])
def test_rdp_epsilon_equals_dp_accounting(sigma, q, steps, delta):
    want = reference(dpa.rdp.RdpAccountant(), sigma, q, steps, delta)
    assert epsilon(sigma, q, steps, delta) == pytest.approx(want, rel=1e-9)


def test_rdp_epsilon_equals_composition_one_step_at_a_time():
    want = reference(dpa.rdp.RdpAccountant(), 1.3, 0.05, 3, 1e-5, one_by_one=True)
    assert epsilon(1.3, 0.05, 3, 1e-5) == pytest.approx(want, rel=1e-9)


def test_pld_epsilon_equals_dp_accounting():
    want = reference(dpa.pld.PLDAccountant(), 1.1, 0.05, 10, 1e-5)
    ours = epsilon(1.1, 0.05, 10, 1e-5, accountant="pld")
    assert ours == pytest.approx(want, rel=1e-6)
    assert ours < epsilon(1.1, 0.05, 10, 1e-5)     # PLD is tighter than RDP


def test_edges_and_calibration():
    assert epsilon(1.0, 0.1, 0, 1e-5) == 0.0
    assert epsilon(0.0, 0.1, 5, 1e-5) == math.inf
    assert epsilon(1.0, 0.1, 20, 1e-5) < epsilon(1.0, 0.1, 40, 1e-5)
    sigma = calibrate_noise(2.0, 1e-5, 0.01, 300)
    assert epsilon(sigma, 0.01, 300, 1e-5) == pytest.approx(2.0, rel=1e-3)
    assert epsilon(sigma * 0.98, 0.01, 300, 1e-5) > 2.0


def test_pld_calibration_searches_from_the_rdp_sigma():
    """The PLD search started at σ = 10⁻³, where a PLD needs billions of grid points: a
    MemoryError (38 GiB at q = 0.01, T = 300). It starts from RDP's σ now (~12 s here)."""
    sigma = calibrate_noise(1.0, 1e-5, 0.01, 10, accountant="pld")
    assert epsilon(sigma, 0.01, 10, 1e-5, accountant="pld") == pytest.approx(1.0, rel=1e-3)
    assert epsilon(sigma * 0.98, 0.01, 10, 1e-5, accountant="pld") > 1.0
    assert sigma < calibrate_noise(1.0, 1e-5, 0.01, 10)  # PLD's bound is the tighter


@pytest.mark.parametrize("steps", [-100, 2.7, True, "10"])
def test_steps_that_are_not_a_count_are_refused(steps):
    """−100 gave ε = 0, 2.7 was taken as 2."""
    with pytest.raises(ValueError, match="steps must be an integer ≥ 0"):
        epsilon(1.0, 0.01, steps, 1e-5)
    with pytest.raises(ValueError, match="steps must be an integer ≥ 0"):
        calibrate_noise(1.0, 1e-5, 0.01, steps)


def test_missing_dp_accounting_is_a_one_line_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)
    with pytest.raises(ImportError, match=r'pip install "ermlab\[privacy\]"') as error:
        epsilon(1.3, 0.017, 3, 1e-5)
    assert "\n" not in str(error.value)
