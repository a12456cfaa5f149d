"""``bin/llm-gateway-admin``: the operator command, pointed at the running local stack by default.

When the environment names no table and no AWS endpoint, and ``make dev`` is running (it wrote
``.local-stack/stack.json``), the command uses that stack's moto endpoint, table and dummy
credentials, and says so on stderr. Otherwise it is exactly ``python -m llm_gateway.cli``.
"""

from __future__ import annotations

import os
import sys

from local.state import admin_environment


def main(argv: list[str] | None = None) -> int:
    local = admin_environment(dict(os.environ))
    if local is not None:
        os.environ.update(local)
        print(f"(local stack: table {local['TABLE_NAME']} at {local['AWS_ENDPOINT_URL']})", file=sys.stderr)
    from llm_gateway.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
