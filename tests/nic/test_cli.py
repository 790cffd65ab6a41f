import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from nicfixtures import FIXTURES

from lbappliance.nic.cli import nic


def write_config(tmp_path: Path, **profile: object) -> Path:
    path = tmp_path / "nic.json"
    path.write_text(json.dumps({"node": "lb1", "interfaces": ["enp1s0"], "profile": profile}))
    return path


def test_plan_text_and_json(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    root = str(FIXTURES / "virtio-2q-8cpu")
    args = ["plan", "--config", str(config), "--facts-root", root]
    text = CliRunner().invoke(nic, args)
    assert text.exit_code == 0, text.output
    assert "enp1s0 (virtio_net, NUMA node unknown): 2 queues (combined channels)" in text.output
    assert "    queue 0: cpu 1  irq 41,42  rps 1-4\n" in text.output
    out = CliRunner().invoke(nic, [*args, "--json"])
    data = json.loads(out.output)
    assert data["nics"][0]["rps_cpus"] == {"rx-0": "1e", "rx-1": "e0"}
    assert data["nics"][0]["irq_affinity"] == {"41": 1, "42": 1, "43": 5, "44": 5}
    assert {"what": "enp1s0 rx-0 rps_cpus", "before": "0", "after": "1e"} in [
        {k: c[k] for k in ("what", "before", "after")} for c in data["changes"]
    ]


def test_plan_with_profile_json(tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text('{"queues": 4, "housekeeping_cpus": []}')
    res = CliRunner().invoke(
        nic,
        [
            "plan",
            "--profile-json",
            str(profile),
            "--node",
            "lb9",
            "--interface",
            "enp1s0",
            "--facts-root",
            str(FIXTURES / "virtio-4q"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.startswith("node lb9\n  enp1s0 (virtio_net, NUMA node unknown): 4 queues")


def test_plan_error_names_node_and_field(tmp_path: Path) -> None:
    config = write_config(tmp_path, queues=9)
    res = CliRunner().invoke(
        nic, ["plan", "--config", str(config), "--facts-root", str(FIXTURES / "virtio-4q")]
    )
    assert res.exit_code == 2
    assert "error: node lb1: profile.queues: enp1s0 has at most 4 combined queues" in res.output


def test_apply_dry_run_json(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    shutil.copytree(FIXTURES / "virtio-4q", root, symlinks=True)
    config = write_config(tmp_path)
    res = CliRunner().invoke(
        nic, ["apply", "--config", str(config), "--root", str(root), "--dry-run", "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["changed"] is True and data["dry_run"] is True and data["failed"] == []
    assert data["changes"][0] == {
        "what": "enp1s0 combined queues",
        "before": "4",
        "after": "3",
        "command": "ethtool -L enp1s0 combined 3",
    }
