"""Another API process on the running local stack: ``python -m local.api --port 3001``.

It serves the same app with the environment ``make dev`` gave its own (read from the stack's
state file, local/state.py): the same moto table, queue and KMS key, the same upstream. Two
gateway instances over one table — e.g. to resume a background response's stream
(``GET /v1/responses/{id}?stream=true&starting_after=N``) on an instance that did not start it.
No poller and no upstream of its own: the stack's worker runs the jobs. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import signal

from local.state import read_state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    state = read_state()
    if not state or "app_env" not in state:
        raise SystemExit("error: no local stack is running (start one with `make dev`)")
    os.environ.update(state["app_env"])
    import uvicorn

    from app import app

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code = main()
    except KeyboardInterrupt:
        code = 0
    raise SystemExit(code)
