"""The health agent: health-driven anycast announcements through ExaBGP.

ExaBGP runs ``python -m lbappliance.health --config .../health-agent.json`` as
a ``process``. Per anycast VIP the agent runs a state machine (``machine.py``)
fed by real signals (``sensors.py``: HAProxy's admin socket, the XDP/IPVS data
plane, end-to-end probes, the maintenance file) and writes ``announce`` /
``withdraw`` lines for ExaBGP (``exabgp.py``). See docs/health-agent.md.
"""
