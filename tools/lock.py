#!/usr/bin/env python3
"""Hashed lock files for every virtualenv and the Lambda layer, compiled by uv.

    make lock         # re-resolve every lock from its human-edited input (keeps current pins
                      # that still satisfy the input; uv reads the existing lock as preferences)
    make lock-check   # fails when a lock no longer matches its input (run in `make test`)
    make lock UPGRADE=1   # also move every pin to the newest allowed release

| input (ranges, edit this)        | lock (generated, installed)       | installed by            |
|----------------------------------|-----------------------------------|-------------------------|
| layers/common/requirements.in    | layers/common/requirements.txt    | sam build (the layer)   |
| requirements-local.txt           | requirements-local.lock           | make dev (.venv, lean)  |
| requirements-dev.txt             | requirements-dev.lock             | make test (.venv)       |
| tools/requirements-sam.txt       | tools/requirements-sam.lock       | .venv-sam               |
| tools/requirements-tools.txt     | tools/requirements-tools.lock     | .venv-tools             |

Every lock pins every package (transitively) with all its distributions' sha256 hashes, so pip
installs in hash-checking mode and nothing unpinned or altered can come in. The local and dev
locks are constrained by the layer's lock: tests run on exactly the versions Lambda gets.

The check re-resolves each input with its lock's versions as constraints and compares the pinned
versions and hashes as sets, so ordering and uv's comments never matter and a new release upstream
changes nothing; a range changed without `make lock`, a pin or hash edited by hand, or a package
added to or removed from an input all fail it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSION = "3.11"
LAYER_LOCK = "layers/common/requirements.txt"

# (input, lock, constraints, target platform). Order matters: a lock is compiled after the locks
# it is constrained by.
LOCKS: list[tuple[str, str, list[str], str]] = [
    ("layers/common/requirements.in", LAYER_LOCK, [], "x86_64-manylinux_2_17"),  # Lambda python3.11 x86_64
    ("requirements-local.txt", "requirements-local.lock", [LAYER_LOCK], "linux"),
    ("requirements-dev.txt", "requirements-dev.lock", ["requirements-local.lock"], "linux"),
    ("tools/requirements-sam.txt", "tools/requirements-sam.lock", [], "linux"),
    ("tools/requirements-tools.txt", "tools/requirements-tools.lock", [], "linux"),
]

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def uv() -> str:
    here = Path(sys.executable).parent / "uv"
    found = str(here) if here.exists() else shutil.which("uv")
    if not found:
        sys.exit("uv not found: `make venv` installs it into .venv-tools (tools/requirements-tools.lock)")
    return found


def compile_lock(source: str, output: Path, constraints: list[str], platform: str, *, upgrade: bool) -> str | None:
    """Compile ``source`` into ``output``; returns uv's error text, or None."""
    cmd = [uv(), "pip", "compile", "--quiet", "--generate-hashes", "--python-version", PYTHON_VERSION]
    cmd += ["--python-platform", platform, "--custom-compile-command", "make lock", "-o", str(output)]
    for constraint in constraints:
        cmd += ["-c", constraint]
    if upgrade:
        cmd.append("--upgrade")
    cmd.append(source)
    env = {**os.environ, "UV_NO_CONFIG": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return f"uv pip compile {source} failed:\n{proc.stderr.strip()}" if proc.returncode else None


def pins(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) of a lock, whatever its order and comments."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    name = None
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        match = _PIN.match(line)
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            out[name] = (match.group(3), frozenset(_HASH.findall(line)))
    return out


def differences(old: str, new: str) -> list[str]:
    a, b = pins(old), pins(new)
    lines = []
    for name in sorted(set(a) | set(b)):
        if name not in a:
            lines.append(f"  + {name}=={b[name][0]} (missing from the lock)")
        elif name not in b:
            lines.append(f"  - {name}=={a[name][0]} (no longer required)")
        elif a[name][0] != b[name][0]:
            lines.append(f"  ~ {name}: lock {a[name][0]}, inputs resolve to {b[name][0]}")
        elif a[name][1] != b[name][1]:
            lines.append(f"  ~ {name}=={a[name][0]}: hashes differ from the index's")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a lock does not match its input")
    parser.add_argument("--upgrade", action="store_true", help="newest allowed releases (not with --check)")
    args = parser.parse_args(argv)

    stale = 0
    with tempfile.TemporaryDirectory() as tmp:
        for source, lock, constraints, platform in LOCKS:
            path = ROOT / lock
            if not args.check:
                error = compile_lock(source, path, constraints, platform, upgrade=args.upgrade)
                if error:
                    sys.exit(error)
                print(f"lock: {lock} ({len(pins(path.read_text()))} packages) from {source}")
                continue
            if not path.exists():
                print(f"lock-check: {lock} is missing; run `make lock`", file=sys.stderr)
                stale += 1
                continue
            # Re-resolve the input with the lock's versions as constraints (so a new release upstream
            # changes nothing) into an empty file (so every hash is fetched from the index afresh).
            current = pins(path.read_text())
            pinned = Path(tmp) / f"{Path(lock).name}.pins"
            pinned.write_text("".join(f"{name}=={version}\n" for name, (version, _) in current.items()))
            candidate = Path(tmp) / Path(lock).name
            error = compile_lock(source, candidate, [*constraints, str(pinned)], platform, upgrade=False)
            if error:
                stale += 1
                print(f"lock-check: {lock} cannot satisfy {source}:\n{error}", file=sys.stderr)
                continue
            diff = differences(path.read_text(), candidate.read_text())
            if diff:
                stale += 1
                print(f"lock-check: {lock} does not match {source}:", file=sys.stderr)
                print("\n".join(diff), file=sys.stderr)
            else:
                print(f"lock-check: {lock} matches {source} ({len(pins(path.read_text()))} packages)")
    if stale:
        print("lock-check: FAIL - run `make lock` and commit the locks", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
