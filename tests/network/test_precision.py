"""Choosing a precision: what ``auto`` picks where, and the names it accepts."""

from __future__ import annotations

import pytest

from brats.network.precision import PRECISIONS, cpu_has_bf16, resolve_precision


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n\n")
    return path


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    assert cpu_has_bf16(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f avx512_bf16 fma"))
    assert cpu_has_bf16(_cpuinfo(tmp_path, "fpu avx512f amx_bf16 amx_tile"))
    assert not cpu_has_bf16(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f fma"))
    assert not cpu_has_bf16(tmp_path / "missing")


@pytest.mark.parametrize(
    ("gpu", "cpu_bf16", "expected"),
    [
        ((9, 0), True, "float16"),  # a tensor-core GPU wins over the CPU
        ((7, 0), False, "float16"),
        ((6, 1), True, "float32"),  # a GPU without tensor cores runs float32
        (None, True, "bfloat16"),
        (None, False, "float32"),
    ],
)
def test_auto_picks_by_hardware(gpu, cpu_bf16, expected):
    assert resolve_precision("auto", gpu=gpu, cpu_bf16=cpu_bf16) == expected


def test_an_explicit_precision_is_kept_and_a_bad_one_refused():
    for name in PRECISIONS[:-1]:
        assert resolve_precision(name, gpu=(9, 0), cpu_bf16=True) == name
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("float8")
