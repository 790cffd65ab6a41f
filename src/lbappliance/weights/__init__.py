"""The feedback weight controller : HAProxy server weights from live signals.

Every interval it reads ``show stat`` from HAProxy's admin socket, estimates each
server's recent latency, error rate and capacity, and moves the weights with
``set weight`` (smoothed, capped, floored, with hysteresis). ``python -m
lbappliance.weights --config /etc/lbappliance/weights.json`` runs it; see
docs/weights.md.
"""
