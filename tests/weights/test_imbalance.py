"""Imbalance detection: CV over rolling windows, capacity margin index."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from click.testing import CliRunner

from lbappliance.cli import main
from lbappliance.haproxy import parse_stat
from lbappliance.weights.history import HistoryRecorder, Sample, load_history, sample_of
from lbappliance.weights.imbalance import PoolMeta, analyze, format_table, to_json
from tests.conftest import INVENTORY
from tests.weights.fixtures import DATA, stat

META = {"web": PoolMeta({"a": 100, "b": 100, "c": 100}, 0.1)}


def history(rates, minutes: float = 65, every: float = 10.0, **rows) -> list[Sample]:
    """Samples every ``every`` s; ``rates(t)`` gives each server's req/s at time t."""
    samples, totals = [], {}
    t = 0.0
    while t <= minutes * 60:
        servers = {}
        for name, rate in rates(t).items():
            totals[name] = totals.get(name, 0.0) + rate * every
            servers[name] = {"stot": int(totals[name]), "scur": 1, "slim": 200, "uweight": 100,
                             "rtime": 2, "up": True, "backup": False, "status": "UP",
                             **rows.get(name, {})}  # fmt: skip
        samples.append(Sample(1_000_000.0 + t, {"web": servers}))
        t += every
    return samples


def test_balanced_pool() -> None:
    (r,) = analyze(history(lambda t: {"a": 30, "b": 30, "c": 30}), META)
    assert r.verdict == "balanced" and not r.note
    assert [w.window for w in r.windows] == ["5m", "15m", "60m"]
    assert all(w.coverage == 1 and w.cv_rate < 0.01 for w in r.windows)
    assert all(s.cmi_level == "ok" and abs(s.cmi - 0.78) < 1e-9 for s in r.servers)


def test_structural_imbalance_and_outlier() -> None:
    (r,) = analyze(history(lambda t: {"a": 60, "b": 20, "c": 20}), META)
    assert r.verdict == "structural"
    assert all(w.imbalanced and abs(w.cv_rate - 0.5657) < 0.01 for w in r.windows)
    # z-scores over 1.5 need four servers or more (three cap at sqrt(2)).
    meta = {"web": PoolMeta({n: 100 for n in "abcd"}, 0.1)}
    (r,) = analyze(history(lambda t: {"a": 80, "b": 20, "c": 20, "d": 20}), meta)
    assert {s.server: s.outlier for s in r.servers} == {
        "a": True,
        "b": False,
        "c": False,
        "d": False,
    }
    assert "STRUCTURAL" in format_table([r]) and "OUTLIER" in format_table([r])


def test_recent_skew_is_not_structural() -> None:
    (r,) = analyze(history(lambda t: {"a": 90 if t > 3600 else 30, "b": 30, "c": 30}), META)
    assert r.verdict == "imbalanced"
    assert r.windows[0].imbalanced and not r.windows[-1].imbalanced


def test_inventory_weights_are_not_imbalance() -> None:
    meta = {"web": PoolMeta({"a": 200, "b": 100, "c": 100}, 0.1)}
    (r,) = analyze(history(lambda t: {"a": 40, "b": 20, "c": 20}), meta)
    assert r.verdict == "balanced"


def test_short_history_says_so() -> None:
    (r,) = analyze(history(lambda t: {"a": 60, "b": 20, "c": 20}, minutes=1), META)
    assert [w.window for w in r.windows] == ["5m"] and r.windows[0].coverage < 0.25
    assert r.verdict == "imbalanced" and "history covers 60 s only" in r.note
    (r,) = analyze(history(lambda t: {"a": 1}, minutes=0), META)
    assert r.verdict == "unknown"


def test_capacity_margin_index() -> None:
    rows = {"a": {"rtime": 70}, "b": {"scur": 150}, "c": {"rtime": 55}}
    (r,) = analyze(history(lambda t: {"a": 30, "b": 30, "c": 30}, **rows), META)
    levels = {s.server: (s.cmi_level, round(s.cmi, 2)) for s in r.servers}
    assert levels == {"a": ("critical", 0.1), "b": ("critical", 0.05), "c": ("warning", 0.25)}
    data = json.loads(to_json([r]))
    assert data["pools"][0]["servers"][0]["cmi_level"] == "critical"


def test_down_and_backup_servers_do_not_count() -> None:
    rows = {"c": {"up": False, "status": "DOWN"}}
    (r,) = analyze(history(lambda t: {"a": 30, "b": 30, "c": 0}, **rows), META)
    assert r.verdict == "balanced"
    assert next(s for s in r.servers if s.server == "c").cmi is None


def test_recorder_keeps_a_bounded_history(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    rec = HistoryRecorder(path, every=10, keep=60)
    for i in range(30):
        rec.record(1000.0 + i * 5, [stat("a", stot=i * 50)])
    samples = load_history(path)
    assert len(samples) == 7 and samples[-1].time - samples[0].time == 60
    assert samples[-1].servers["web"]["a"]["stot"] == 28 * 50  # recorded at i = 28 (t = 140)
    assert HistoryRecorder(path).samples == samples  # survives a restart


def test_command_reads_history_and_socket(tmp_path: Path, fake_haproxy) -> None:
    data = json.loads((DATA / "hard_900ms.json").read_text())
    text = "\n".join([data["header"], *data["samples"][-1]["rows"]]) + "\n"
    socket_path, _, answers = fake_haproxy
    answers["show"] = text
    now = time.time()
    hist = {"samples": []}
    for i, s in enumerate(data["samples"][-6:-1]):
        rows = parse_stat("\n".join([data["header"], *s["rows"]]) + "\n").servers
        hist["samples"].append(asdict(sample_of(now - 50 + i * 10, rows)))
    (tmp_path / "h.json").write_text(json.dumps(hist))
    args = ["imbalance", "--site", "lab", "--inventory", str(INVENTORY)]
    args += ["--socket", str(socket_path), "--history", str(tmp_path / "h.json")]
    result = CliRunner().invoke(main, [*args, "--json"])
    out = json.loads(result.output)
    (pool,) = out["pools"]
    assert pool["pool"] == "web" and pool["windows"][0]["window"] == "5m"
    b1 = next(s for s in pool["servers"] if s["server"] == "backend1")
    assert b1["cmi_level"] == "critical"  # HAProxy's average is way over 0.6 x 100 ms
    assert result.exit_code == 1
    table = CliRunner().invoke(main, args).output
    assert "pool web:" in table and "CRITICAL" in table
    # On a node without the inventory: the rendered weights.json gives weights and targets.
    config = {"haproxy_socket": str(socket_path), "pools": [
        {"name": "web", "target_latency": 2.0,
         "servers": [{"name": "backend1", "weight": 100}, {"name": "backend2", "weight": 100}]}
    ]}  # fmt: skip
    (tmp_path / "weights.json").write_text(json.dumps(config))
    args = ["imbalance", "--config", str(tmp_path / "weights.json")]
    result = CliRunner().invoke(main, [*args, "--history", str(tmp_path / "h.json"), "--json"])
    (pool,) = json.loads(result.output)["pools"]
    assert pool["target_latency"] == 2.0 and result.exit_code == 0  # 441 ms of 2 s: fine
