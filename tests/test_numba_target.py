"""ermlab._numba_target: 512-bit vectors where chosen, Numba's own choice elsewhere, and
the choice reaching Numba's compiler when a kernel module is imported."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba", reason="the vector width is a setting of Numba's (ermlab[fast])")

from ermlab._numba_target import WIDE_CPUS, wide_features  # noqa: E402

HOST = "+avx512f,+avx512bw,+avx2,+fma,-avx512fp16,+prefer-256-bit"


def test_intel_server_cores_drop_the_256_bit_preference_and_keep_every_host_feature():
    features = wide_features("emeraldrapids", HOST, {})
    assert features == "+avx512f,+avx512bw,+avx2,+fma,-avx512fp16,-prefer-256-bit"
    assert "emeraldrapids" in WIDE_CPUS and "sapphirerapids" in WIDE_CPUS


def test_a_host_with_amx_is_a_server_core_whatever_name_llvm_gives_it():
    # a Xeon VM with AMX that LLVM named after a desktop core
    amx = HOST.replace("+avx2,", "+avx2,+amx-tile,+amx-bf16,")
    assert wide_features("rocketlake", amx, {}).endswith(",-prefer-256-bit")
    assert wide_features("rocketlake", amx, {"ERMLAB_WIDE_VECTORS": "0"}) is None
    assert wide_features("rocketlake", HOST.replace("+avx2,", "+avx2,-amx-tile,"), {}) is None


@pytest.mark.parametrize("cpu", ["skylake-avx512", "icelake-server", "znver4", "znver3"])
def test_other_processors_keep_numbas_choice_unless_asked(cpu):
    assert wide_features(cpu, HOST, {}) is None
    assert wide_features(cpu, HOST, {"ERMLAB_WIDE_VECTORS": "auto"}) is None
    assert wide_features(cpu, HOST, {"ERMLAB_WIDE_VECTORS": "1"}).endswith(",-prefer-256-bit")


def test_no_avx512_no_opt_in_or_the_users_own_numba_setting_leave_numba_alone():
    assert wide_features("emeraldrapids", "+avx2,-avx512f", {"ERMLAB_WIDE_VECTORS": "1"}) is None
    assert wide_features("emeraldrapids", HOST, {"ERMLAB_WIDE_VECTORS": "0"}) is None
    assert wide_features("emeraldrapids", HOST, {"NUMBA_CPU_FEATURES": "+avx2"}) is None
    assert wide_features("emeraldrapids", HOST, {"NUMBA_CPU_NAME": "generic"}) is None
    with pytest.raises(ValueError, match="ERMLAB_WIDE_VECTORS='yes'.*use 0"):
        wide_features("emeraldrapids", HOST, {"ERMLAB_WIDE_VECTORS": "yes"})


# A host that LLVM takes for an Emerald Rapids with AVX-512: the kernel is compiled and
# its machine code read, never run, so this holds on any x86-64 machine.
_PROBE = textwrap.dedent("""
    import llvmlite.binding as ll
    import numba.core.codegen as codegen
    ll.get_host_cpu_name = lambda: "emeraldrapids"
    codegen.get_host_cpu_features = lambda: (
        "+avx512f,+avx512bw,+avx512vl,+avx512dq,+avx2,+avx,+fma,+sse4.2,+sse4.1,+ssse3,"
        "+sse3,+sse2,+sse,+f16c,+bmi,+bmi2,+popcnt,+cx16,+lzcnt,+movbe")
    import ermlab.nn._relu_kernels  # a kernel module: sets the width on import
    from numba import njit
    from numba.core import config

    @njit("void(float32[::1], float32[::1], float32)", fastmath={"contract"})
    def axpy(y, x, a):
        for i in range(y.size):
            y[i] += a * x[i]

    asm = axpy.inspect_asm(axpy.signatures[0])
    print(config.CPU_FEATURES, "zmm" in asm, "ymm" in asm)
""")


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "AMD64"), reason="x86-64 only")
@pytest.mark.parametrize("wanted, wide", [("auto", True), ("0", False)])
def test_importing_a_kernel_module_sets_the_width_numba_compiles_for(tmp_path, wanted, wide):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    environ.update(ERMLAB_WIDE_VECTORS=wanted, NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", _PROBE], env=environ, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    features, zmm, ymm = result.stdout.split()
    assert features.endswith(",-prefer-256-bit") if wide else features == "None"
    assert zmm == str(wide)
    if not wide:
        assert ymm == "True"  # Numba's own choice: 256-bit vectors
