import socket

import pytest

from tests import netguard


def test_outside_connections_fail_loudly():
    with pytest.raises(netguard.NetworkAccessError, match="93.184.216.34"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    with pytest.raises(netguard.NetworkAccessError, match="query2.finance.yahoo.com"):
        socket.getaddrinfo("query2.finance.yahoo.com", 443)
    netguard.VIOLATIONS.clear()  # expected here; elsewhere they fail the test


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=2)
    client.close()
    server.close()
