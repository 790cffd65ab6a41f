"""Bring the running kernel in line with a sysctl.d file; print the keys changed.

Usage: apply_sysctl.py FILE [--check]. Compares each setting with /proc/sys
(whitespace-insensitive) and writes only those that differ, so a run that
finds everything in place changes nothing. With --check, writes nothing.
A key written as `-key = value` may be missing (as in sysctl.d).
"""

import sys

path, check = sys.argv[1], "--check" in sys.argv[2:]
changed = []
with open(path) as settings:
    for raw in settings:
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        optional = key.startswith("-")
        key = key.lstrip("-")
        proc = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(proc) as f:
                current = f.read().split()
        except OSError as exc:
            if optional:
                continue
            sys.exit(f"{key}: {exc.strerror}")
        if current != value.split():
            changed.append(key)
            if not check:
                with open(proc, "w") as f:
                    f.write(value)
print(" ".join(changed))
