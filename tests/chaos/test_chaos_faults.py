"""The fault tools themselves: a blackhole drops (never refuses), loss drops about the fraction asked,
heal restores the link, and the namespace and its links are gone after close."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.chaos import netns

pytestmark = pytest.mark.chaos

CONNECT = """
import socket, sys, time
t = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except TimeoutError:
    print("timeout")
except OSError as exc:
    print(type(exc).__name__)
"""

DATAGRAMS = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
"""


def inside(ns: netns.Namespace, script: str, *args: object) -> str:
    argv = ns.command([sys.executable, "-c", script, *map(str, args)])
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def test_blackhole_drops_loss_drops_a_fraction_and_heal_restores(namespace: netns.Namespace) -> None:
    link = namespace.link("x")
    with socket.create_server((link.root_ip, 0)) as server:
        port = server.getsockname()[1]
        assert inside(namespace, CONNECT, link.root_ip, port, 5) == "connected"
        link.blackhole()
        assert inside(namespace, CONNECT, link.root_ip, port, 1.5) == "timeout", "a blackhole never refuses"
        assert link.dropped() > 0
        link.heal()
        assert inside(namespace, CONNECT, link.root_ip, port, 5) == "connected"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        udp.bind((link.root_ip, 0))
        udp.setblocking(False)
        link.loss(0.5)
        inside(namespace, DATAGRAMS, link.root_ip, udp.getsockname()[1], 400)
        received = 0
        while True:
            try:
                udp.recv(16)
            except BlockingIOError:
                break
            received += 1
    # 400 datagrams at 50% loss: 200 expected, standard deviation 10.
    assert 140 <= received <= 260, f"{received} of 400 datagrams arrived at 50% loss"


def test_close_removes_the_namespace_and_its_links() -> None:
    from tests.chaos.conftest import require_netns

    require_netns()
    ns = netns.Namespace()
    link = ns.link("x")
    ns.close()
    assert ns.name not in netns.run("ip", "netns", "list")
    assert netns.run("ip", "link", "show", link.root_dev, check=False) == ""
