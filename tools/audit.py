#!/usr/bin/env python3
"""Audit the pinned dependencies (the locks, see tools/lock.py) for known vulnerabilities.

    make audit

pip-audit checks every pin of each lock against PyPI's advisory data, or OSV when PyPI's is not
available. It fails (exit 1) on any known vulnerability. When neither source answers - no
network, or an index mirror without PyPI's per-release JSON API - it says so plainly, names
what went unaudited and exits 0: an audit that could not run is reported, not passed off as
clean, and CI elsewhere does not fail for being offline. A partial audit (some pins unknown
to the source) is reported with the count.

Ignoring an advisory: add `ID  # why it does not apply, and until when` to tools/audit-ignore.txt.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = [
    "layers/common/requirements.txt",
    "requirements-dev.lock",
    "tools/requirements-sam.lock",
    "tools/requirements-tools.lock",
]
SERVICES = ("pypi", "osv")
IGNORE_FILE = ROOT / "tools" / "audit-ignore.txt"


def ignored() -> list[str]:
    if not IGNORE_FILE.exists():
        return []
    ids = []
    for line in IGNORE_FILE.read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            if "#" not in line:
                sys.exit(f"audit: {IGNORE_FILE.name}: '{entry}' has no justification comment")
            ids.append(entry)
    return ids


def run(lock: str, service: str) -> tuple[list[dict], str]:
    """(dependencies as pip-audit reports them, error text). An empty list means the run failed."""
    exe = Path(sys.executable).parent / "pip-audit"
    cmd = [str(exe), "-r", lock, "--disable-pip", "-s", service, "-f", "json", "--progress-spinner", "off"]
    cmd += ["--timeout", "10"]
    for vuln in ignored():
        cmd += ["--ignore-vuln", vuln]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    try:
        return json.loads(proc.stdout)["dependencies"], ""
    except (json.JSONDecodeError, KeyError):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [], last.split(": Max retries")[0][:200]


def main() -> int:
    vulnerable = 0
    unaudited: list[str] = []
    dead: dict[str, str] = {}  # a source that answered nothing for one lock is not asked again
    for lock in LOCKS:
        for service in SERVICES:
            if service in dead:
                continue
            deps, error = run(lock, service)
            audited = [d for d in deps if "skip_reason" not in d]
            if audited:
                break
            dead[service] = error or f"knows none of the {len(deps)} pinned releases of {lock}"
        else:
            reasons = "; ".join(f"{service}: {why}" for service, why in dead.items())
            print(f"audit: NOT RUN for {lock} - no vulnerability source answered ({reasons})")
            unaudited.append(lock)
            continue
        skipped = [d["name"] for d in deps if "skip_reason" in d]
        found = [(d["name"], d["version"], v["id"]) for d in audited for v in d.get("vulns", [])]
        note = f", {len(skipped)} unknown to {service}: {', '.join(skipped)}" if skipped else ""
        print(f"audit: {lock}: {len(audited)} of {len(deps)} pins audited against {service}{note}")
        for name, version, vuln in found:
            print(f"audit: VULNERABLE {name}=={version}: {vuln}", file=sys.stderr)
        vulnerable += len(found)
    if unaudited:
        print(
            f"audit: {len(unaudited)} of {len(LOCKS)} locks were NOT audited: nothing is known about their "
            "vulnerabilities. Run `make audit` where PyPI's JSON API or api.osv.dev is reachable."
        )
    if vulnerable:
        print(
            f"audit: FAIL - {vulnerable} known vulnerabilities; upgrade (make lock UPGRADE=1) or justify in "
            f"{IGNORE_FILE.relative_to(ROOT)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
