"""A stand-in for the node helper (``python -m lbappliance.health.node``) that answers
from a script, so the playbooks' drain logic runs without a node's daemons.

``python helperstub.py SCRIPT ACTION [ARGS...]``: SCRIPT is a JSON list of answers,
one per call in call order (the last one answers every later call). An answer is a
report (printed with the current ``time``, as the helper prints it) or
``{"exit": N, "stderr": "..."}`` for a helper that fails; ``"delay": S`` in an
answer makes the call take S seconds more. Each call appends its action to
``SCRIPT.log``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> int:
    script, action = Path(sys.argv[1]), sys.argv[2]
    log = script.with_suffix(".log")
    calls = log.read_text().splitlines() if log.exists() else []
    with log.open("a") as f:
        f.write(action + "\n")
    answers = json.loads(script.read_text())
    answer = answers[min(len(calls), len(answers) - 1)]
    time.sleep(answer.pop("delay", 0))
    if "exit" in answer:
        print(answer.get("stderr", ""), file=sys.stderr)
        return answer["exit"]
    print(json.dumps({**answer, "time": time.time()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
