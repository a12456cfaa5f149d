"""botocore's data loader, keeping less of ``endpoints.json`` in memory.

Every botocore session parses ``endpoints.json`` (1.2 MB: every partition's every service,
~4 MiB of dicts) and its endpoint resolver keeps it for the life of the process, although a
client only ever reads its own service's entry and its partition's defaults. This loader keeps
each partition whole except its ``services``, of which only those this package builds clients
for (``SERVICES``): their clients resolve exactly as with botocore's own loader, in every
partition (tests/unit/test_aws_loader.py). A client for another service from this session must
have its name added there first (``llm_gateway.aws.client`` refuses it): without its entry,
botocore would fall back to partition defaults, which are wrong for global services such as S3.
"""

from __future__ import annotations

import os
from typing import Any

from botocore.loaders import Loader

# The clients built through llm_gateway.aws.client.
SERVICES = frozenset({"dynamodb", "kms", "sqs", "ssm"})


def trimmed_endpoints(data: dict[str, Any], services: frozenset[str] = SERVICES) -> dict[str, Any]:
    partitions = [
        {**partition, "services": {k: v for k, v in partition.get("services", {}).items() if k in services}}
        for partition in data.get("partitions", [])
    ]
    return {**data, "partitions": partitions}


class TrimmingLoader(Loader):
    def load_data_with_path(self, name: str) -> tuple[Any, str]:
        data, path = super().load_data_with_path(name)
        if name == "endpoints":
            data = trimmed_endpoints(data)
            # botocore's instance cache (``self._cache``, keyed by method and name) would otherwise
            # keep the whole parsed file next to the trimmed copy
            self._cache[("load_data_with_path", name)] = (data, path)  # type: ignore[attr-defined]
        return data, path


def botocore_session() -> Any:
    """A botocore session using the trimming loader, honouring ``AWS_DATA_PATH`` like its own."""
    from botocore.session import Session

    session = Session()
    paths = session.get_config_variable("data_path")
    extra = [os.path.expanduser(p) for p in paths.split(os.pathsep)] if paths else []
    session.register_component("data_loader", TrimmingLoader(extra_search_paths=extra))
    return session
