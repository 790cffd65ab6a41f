"""`nic capture` writes a tree the reader reads exactly like the source."""

from pathlib import Path

from nicfixtures import FIXTURES

from lbappliance.nic import gather_facts
from lbappliance.nic.capture import capture


def test_capture_of_a_tree_reads_back_the_same(tmp_path: Path) -> None:
    for layout in ("mlx5-2socket", "virtio-4q", "ixgbe-1socket-nosmt"):
        out = tmp_path / layout
        names = capture(out, None, source=FIXTURES / layout)
        assert gather_facts(out, names) == gather_facts(FIXTURES / layout, names)


def test_capture_this_host(tmp_path: Path) -> None:
    names = capture(tmp_path / "host")
    live = gather_facts("/", names)
    captured = gather_facts(tmp_path / "host", names)
    assert captured.topology == live.topology
    assert captured.sysctls == live.sysctls
    for name in names:
        a, b = captured.nics[name], live.nics[name]
        assert (a.driver, a.numa_node, a.channels, a.features) == (
            b.driver,
            b.numa_node,
            b.channels,
            b.features,
        )
        assert [i.irq for i in a.irqs] == [i.irq for i in b.irqs]
