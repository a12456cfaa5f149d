"""Where the running local stack can be found: ``.local-stack/stack.json`` (git-ignored).

``make dev`` writes it once everything is up and removes it when it stops, so operator tools
(``bin/llm-gateway-admin``, ``bin/llm-gateway chat``) find the stack's API, key, moto endpoint
and table by themselves. A file left by a killed stack is harmless: tools that use it report
the endpoint they could not reach in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = ROOT / ".local-stack" / "stack.json"


def state_file() -> Path:
    """``STATE_FILE``, or ``LOCAL_STACK_STATE`` (tests run several stacks side by side)."""
    return Path(os.environ.get("LOCAL_STACK_STATE") or STATE_FILE)


# The environment an AWS client needs to reach the local stack's moto (dummy credentials).
AWS_KEYS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION")


def write_state(state: dict[str, Any], path: Path | None = None) -> Path:
    path = path or state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.chmod(tmp, 0o600)  # it holds the dev key
    tmp.replace(path)
    return path


def remove_state(path: Path | None = None) -> None:
    path = path or state_file()
    path.unlink(missing_ok=True)


def read_state(path: Path | None = None) -> dict[str, Any] | None:
    """The running stack's state, or None when no stack wrote one (or it is unreadable)."""
    path = path or state_file()
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def admin_environment(env: dict[str, str], path: Path | None = None) -> dict[str, str] | None:
    """What to add to ``env`` so the admin command talks to the running local stack.

    None when ``env`` already names a table (``TABLE_NAME``) or an AWS endpoint — the operator
    chose a target, local or deployed — or when no local stack is running.
    """
    if env.get("TABLE_NAME") or env.get("AWS_ENDPOINT_URL"):
        return None
    state = read_state(path)
    if not state or "aws" not in state:
        return None
    queues = {k: state[k.lower()] for k in ("JOBS_QUEUE_URL", "JOBS_PARKED_QUEUE_URL") if state.get(k.lower())}
    return {**{k: v for k, v in state["aws"].items() if k in AWS_KEYS}, "TABLE_NAME": state["table_name"], **queues}
