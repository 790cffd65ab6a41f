from hypothesis import given
from hypothesis import strategies as st

from lbappliance.nic.cpulist import (
    cpus_of,
    format_cpulist,
    format_mask,
    mask_of,
    parse_cpulist,
    parse_mask,
)


def test_cpulist_parse_and_format() -> None:
    assert parse_cpulist("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert parse_cpulist("\n") == frozenset()
    assert format_cpulist([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    assert format_cpulist([]) == ""


def test_mask_as_sysfs_prints_and_reads_it() -> None:
    assert parse_mask("00000000,0000ff00\n") == 0xFF00
    assert parse_mask("0\n") == 0
    assert format_mask(0xFF00) == "ff00"
    assert format_mask(1 << 32) == "1,00000000"
    assert format_mask(mask_of([0, 33])) == "2,00000001"
    assert format_mask(0) == "0"


@given(st.frozensets(st.integers(min_value=0, max_value=300)))
def test_roundtrips(cpus: frozenset[int]) -> None:
    assert parse_cpulist(format_cpulist(cpus)) == cpus
    assert cpus_of(parse_mask(format_mask(mask_of(cpus)))) == cpus
