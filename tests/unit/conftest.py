"""Unit tests open no sockets: any attempt to reach the network fails the test (pytest-socket).

Unix-domain sockets stay allowed (an asyncio event loop wakes itself through a socketpair); moto's
in-process ``mock_aws`` and ``responses`` need no socket at all.
"""

from __future__ import annotations

import pytest
from pytest_socket import disable_socket, enable_socket


@pytest.fixture(autouse=True)
def _no_network_sockets():
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()
