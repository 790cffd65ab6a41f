"""``python -m lbappliance.health --config /etc/lbappliance/health-agent.json``

Run by ExaBGP as a ``process`` (see ``etc/exabgp/exabgp.conf``). stdout is the
ExaBGP API and nothing else: the real stdout descriptor is kept for API lines
and file descriptor 1 is pointed at stderr, so a stray print cannot forge a
command. ``--check`` only validates the configuration.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import click

from lbappliance.health.agent import AGENT, Agent, Watchdog
from lbappliance.health.config import ConfigError, config_option, load
from lbappliance.health.exabgp import ExabgpChannel
from lbappliance.health.metrics import MetricsServer
from lbappliance.health.sensors import Sensors
from lbappliance.jsonlog import json_log

EXIT_CONFIG = 2


def respawn_disabled(env: dict[str, str]) -> str | None:
    """The variable that turned ExaBGP's helper respawn off, if one did.

    Without respawn nothing withdraws what a dead agent announced, so the agent
    refuses to announce at all. (A setting in an exabgp.env file is invisible here.)
    """
    for key in ("exabgp.api.respawn", "exabgp_api_respawn"):
        if env.get(key, "").strip().lower() in ("false", "0", "no", "off"):
            return key
    return None


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Health agent: announces each anycast VIP through ExaBGP while it is healthy.",
)
@config_option()
@click.option("--check", is_flag=True, help="validate the configuration, print a summary, exit")
def main(config_path: str, check: bool) -> None:
    sys.exit(run(config_path, check))


def run(config_path: str, check: bool) -> int:
    """The agent's life; the exit status."""
    log = json_log(AGENT)
    try:
        cfg = load(config_path)
    except ConfigError as exc:
        print(f"lbappliance-health: configuration error in {exc.path}:", file=sys.stderr)
        for error in exc.errors:
            print(f"  - {error}", file=sys.stderr)
        print("lbappliance-health: nothing announced; exiting.", file=sys.stderr)
        return EXIT_CONFIG
    disabled = respawn_disabled(dict(os.environ))
    if disabled and not check:
        print(
            f"lbappliance-health: {disabled} is off: ExaBGP would keep this agent's routes "
            "after it dies. Refusing to announce anything; exiting.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if check:
        print(
            f"{config_path}: ok — node {cfg.node}, {len(cfg.vips)} VIPs: "
            + ", ".join(f"{v.prefix} [{' '.join(v.signals)}]" for v in cfg.vips)
        )
        return 0

    api_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    channel = ExabgpChannel(
        api_out,
        sys.stdin,
        time.monotonic,
        on_event=lambda line: log({"event": "exabgp", "node": cfg.node, "line": line}),
    )
    channel.start()
    sensors = Sensors(cfg)
    agent = Agent(cfg, channel, sensors.observe, log=log)

    def on_term(signum: int, _frame: Any) -> None:
        if not channel.closed.is_set():
            agent.emergency_withdraw(f"signal {signal.Signals(signum).name}")
        agent.stop.set()
        channel.closed.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    metrics = None
    if cfg.metrics_port:
        try:
            metrics = MetricsServer(cfg.metrics_address, cfg.metrics_port, agent.snapshot)
            metrics.start()
        except OSError as exc:
            log({"event": "warning", "node": cfg.node, "reason": f"no metrics endpoint: {exc}"})
    # A round is bounded by the signal timeout plus one acknowledgement per VIP.
    limit = max(10.0, 10 * cfg.interval) + channel.ack_timeout * len(cfg.vips)
    Watchdog(agent, limit=limit).start()
    try:
        agent.run()
    finally:
        agent.stop.set()
        sensors.close()
        if metrics:
            metrics.close()
    return 0


if __name__ == "__main__":
    main(prog_name="python -m lbappliance.health")
