"""glibc's malloc thresholds set for training steps (``ermlab._malloc``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ermlab import _malloc

# Rounds of eight 16 MiB arrays written and freed: 128 MiB free at the top of the heap each
# time, more than the 32 MiB glibc's sliding trim threshold reaches from a 16 MiB block and
# than the 64 MiB ermlab set before its containers let caches go in bprop, less than its
# 256 MiB. Prints the page faults of each round after the first two.
ROUNDS = """
import resource, numpy
import ermlab.nn, ermlab._malloc
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [numpy.ones(4 << 20, numpy.float32) for _ in range(8)]
    del arrays
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(ermlab._malloc._configured, sorted(faults[2:])[len(faults[2:]) // 2])
"""


def _rounds(**env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items()
               if k not in _malloc.GLIBC_SETTINGS and k not in ("ERMLAB_MALLOC", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", ROUNDS], env={**environ, **env},
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(_malloc._glibc() is None, reason="glibc's malloc only (Linux)")
def test_freed_arrays_stay_with_the_process_for_the_next_step():
    configured, kept = _rounds()
    left, given_back = _rounds(ERMLAB_MALLOC="0")
    assert (configured, left) == ("True", "False")
    # given back each round, the arrays are faulted in again (64 huge pages at the least,
    # 32,768 small ones at the most); kept, hardly at all
    assert given_back >= 64
    assert kept <= given_back // 8


@pytest.mark.skipif(_malloc._glibc() is None, reason="glibc's malloc only (Linux)")
def test_glibc_settings_of_the_users_own_stand():
    configured, _ = _rounds(MALLOC_TRIM_THRESHOLD_=str(1 << 20))
    assert configured == "False"


@pytest.mark.parametrize("environ, expected", [
    ({}, True),
    ({"ERMLAB_MALLOC": "1"}, True),
    ({"ERMLAB_MALLOC": " 0 "}, False),
    ({"MALLOC_MMAP_THRESHOLD_": "65536"}, False),
    ({"MALLOC_TOP_PAD_": "0"}, False),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}, False),
    ({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F"}, True),
])
def test_the_thresholds_are_set_unless_the_user_chose_otherwise(environ, expected):
    assert _malloc.wanted(environ) is expected


def test_an_unknown_setting_is_named_with_the_values_it_takes():
    with pytest.raises(ValueError, match=r"ERMLAB_MALLOC='yes'.*use 0.*or 1"):
        _malloc.wanted({"ERMLAB_MALLOC": "yes"})


def test_off_glibc_nothing_is_set(monkeypatch):
    monkeypatch.setattr(_malloc.sys, "platform", "darwin")
    monkeypatch.setattr(_malloc, "_configured", None)
    assert _malloc._glibc() is None
    assert _malloc.configure() is False
