"""Apply on copies of the captured trees, with FakeDriver playing ethtool/systemctl."""

import hashlib
import os
from pathlib import Path

import pytest
from fake_driver import FakeDriver, copy_fixture, spec_named

from lbappliance.nic import Applier, NicProfile, PlanError
from lbappliance.nic.irqbalance import DROPIN, DROPIN_PATH, ENV_PATH

MLX5 = ["enp175s0f0np0", "enp175s0f1np1"]


def setup(tmp_path: Path, layout: str) -> tuple[Path, FakeDriver, Applier]:
    root = copy_fixture(layout, tmp_path)
    driver = FakeDriver(root, spec_named(layout))
    return root, driver, Applier(root, runner=driver)


def read(root: Path, path: str) -> str:
    return (root / path.lstrip("/")).read_text()


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            h.update(str(path.relative_to(root)).encode())
            if not path.is_symlink():
                h.update(path.read_bytes())
    return h.hexdigest()


def test_mlx5_apply_then_nothing_to_do(tmp_path: Path) -> None:
    root, driver, applier = setup(tmp_path, "mlx5-2socket")
    result = applier.apply("lb1", NicProfile(), MLX5)
    assert result.failed == [] and result.changed
    assert driver.ethtool_commands() == [
        "ethtool -X enp175s0f0np0 equal 16",
        "ethtool -L enp175s0f0np0 combined 16",
        "ethtool -X enp175s0f1np1 equal 16",
        "ethtool -L enp175s0f1np1 combined 16",
    ]
    for port, first_irq in zip(MLX5, (78, 119), strict=True):
        queues = sorted(p.name for p in (root / f"sys/class/net/{port}/queues").iterdir())
        assert queues == sorted([f"rx-{q}" for q in range(16)] + [f"tx-{q}" for q in range(16)])
        for q in range(16):
            # port 1's driver hints already put comp0..15 there: left as they were.
            assert read(root, f"/proc/irq/{first_irq + q}/smp_affinity_list").strip() == str(16 + q)
        assert read(root, f"/sys/class/net/{port}/queues/tx-0/xps_cpus") == "10001,00010001"
        assert (
            read(root, f"/sys/class/net/{port}/queues/rx-0/rps_cpus").strip() == "00000000,00000000"
        )
    # mlx5 comp16..31 serve no queue any more; left as they were.
    assert read(root, "/proc/irq/94/smp_affinity_list") == "0-63\n"
    assert read(root, DROPIN_PATH) == DROPIN
    env = read(root, ENV_PATH)
    assert "IRQBALANCE_BANNED_CPULIST=16-31\n" in env
    assert " ".join(f"--banirq={i}" for i in [*range(78, 94), *range(119, 135)]) in env
    assert read(root, "/proc/sys/net/core/netdev_max_backlog") == "16384"
    assert read(root, "/proc/sys/net/core/netdev_budget") == "600"
    assert [" ".join(c) for c in driver.commands if c[0] == "systemctl"] == [
        "systemctl daemon-reload",
        "systemctl try-restart irqbalance.service",
    ]
    whats = [c.what for c in result.changes]
    assert len([w for w in whats if " affinity" in w]) == 16  # port 0 only
    assert len([w for w in whats if "xps_cpus" in w]) == 32

    driver.commands.clear()
    again = applier.apply("lb1", NicProfile(), MLX5)
    assert (again.changed, again.changes, again.failed) == (False, [], [])
    assert driver.commands == []


def test_ixgbe_apply_reports_each_change(tmp_path: Path) -> None:
    root, driver, applier = setup(tmp_path, "ixgbe-1socket")
    profile = NicProfile(ring_rx=4096, irqbalance="stop")
    result = applier.apply("lb1", profile, ["enp1s0f0"])
    assert result.failed == []
    assert [(c.what, c.before, c.after) for c in result.changes][:8] == [
        ("enp1s0f0 RSS indirection", "equal 8", "equal 7"),
        ("enp1s0f0 combined queues", "8", "7"),
        ("enp1s0f0 rings", "rx 512", "rx 4096"),
        ("enp1s0f0 offloads", "lro on", "lro off"),
        # before the IRQ facts are read again: a running irqbalance moves IRQs
        ("irqbalance", "active, enabled", "stopped, disabled"),
        ("enp1s0f0 rx-flow-hash udp4", "sd", "sdfn"),
        ("enp1s0f0 rx-flow-hash udp6", "sd", "sdfn"),
        ("enp1s0f0 irq 40 (enp1s0f0-TxRx-0) affinity", "0-7", "1"),
    ]
    assert "ethtool -N enp1s0f0 rx-flow-hash udp4 sdfn" in driver.ethtool_commands()
    assert ["systemctl", "disable", "--now", "irqbalance.service"] in driver.commands
    assert not (root / ENV_PATH.lstrip("/")).exists()
    again = applier.apply("lb1", profile, ["enp1s0f0"])
    assert (again.changed, again.failed) == (False, [])


def test_growing_queues_sets_the_rss_table_after_the_channels(tmp_path: Path) -> None:
    _, driver, applier = setup(tmp_path, "mlx5-2socket")
    applier.apply("lb1", NicProfile(queues=4), MLX5[:1])
    driver.commands.clear()
    result = applier.apply("lb1", NicProfile(), MLX5[:1])
    assert driver.ethtool_commands() == [
        "ethtool -L enp175s0f0np0 combined 16",
        "ethtool -X enp175s0f0np0 equal 16",  # our own table from the first apply stays
    ]
    assert result.failed == []
    assert applier.apply("lb1", NicProfile(), MLX5[:1]).changed is False


def test_rps_on_fewer_queues_than_cores(tmp_path: Path) -> None:
    root, _, applier = setup(tmp_path, "virtio-2q-8cpu")
    result = applier.apply("lb1", NicProfile(), ["enp1s0"])
    assert result.failed == []
    q = "/sys/class/net/enp1s0/queues"
    assert [read(root, f"{q}/rx-{i}/rps_cpus") for i in (0, 1)] == ["1e", "e0"]
    assert [read(root, f"{q}/tx-{i}/xps_cpus") for i in (0, 1)] == ["1f", "e0"]
    assert applier.apply("lb1", NicProfile(), ["enp1s0"]).changed is False


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    root, driver, applier = setup(tmp_path, "virtio-4q")
    before = tree_digest(root)
    result = applier.apply("lb1", NicProfile(), ["enp1s0"], dry_run=True)
    assert tree_digest(root) == before and driver.commands == []
    assert result.dry_run and result.changed
    assert [c.what for c in result.changes][:2] == [
        "enp1s0 combined queues",
        "enp1s0 offloads",
    ]
    # virtio without irqbalance installed: nothing to ban.
    assert not any("irqbalance" in c.what for c in result.changes)


def test_failed_change_is_reported_not_fatal(tmp_path: Path) -> None:
    root, _, applier = setup(tmp_path, "virtio-4q")
    target = root / "proc/irq/43/smp_affinity_list"
    target.unlink()
    target.symlink_to("/nonexistent/dir/x")  # writing it fails, as a managed IRQ's EIO would
    result = applier.apply("lb1", NicProfile(), ["enp1s0"])
    assert [c.what for c, _ in result.failed] == ["enp1s0 irq 43 (virtio1-input.1) affinity"]
    assert "FileNotFoundError" in result.failed[0][1]
    assert read(root, "/proc/irq/44/smp_affinity_list") == "2"  # the rest still applied
    assert result.to_dict()["failed"][0]["path"] == "/proc/irq/43/smp_affinity_list"


def test_plan_errors_touch_nothing(tmp_path: Path) -> None:
    root, driver, applier = setup(tmp_path, "ixgbe-1socket")
    before = tree_digest(root)
    with pytest.raises(PlanError, match=r"profile\.queues"):
        applier.apply("lb1", NicProfile(queues=9), ["enp1s0f0"])
    assert tree_digest(root) == before and driver.commands == []


def test_commands_are_not_run_against_a_captured_tree(tmp_path: Path) -> None:
    root = copy_fixture("virtio-4q", tmp_path)
    result = Applier(root).apply("lb1", NicProfile(), ["enp1s0"])
    assert [c.argv[:2] for c, _ in result.failed] == [("ethtool", "-L"), ("ethtool", "-K")]
    assert all("not run" in err for _, err in result.failed)


def test_a_missing_interface_fails_but_the_others_are_tuned(tmp_path: Path) -> None:
    root, _, applier = setup(tmp_path, "virtio-4q")
    result = applier.apply("lb1", NicProfile(), ["enp1s0", "enp9s0"])
    assert [(c.what, err) for c, err in result.failed] == [("enp9s0", "no such interface")]
    assert result.to_dict()["failed"] == [
        {"what": "enp9s0", "before": "absent", "after": "tuned", "error": "no such interface"}
    ]
    assert read(root, "/proc/irq/41/smp_affinity_list") == "1"
