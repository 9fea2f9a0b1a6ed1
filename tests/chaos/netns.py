"""Network faults the chaos tests make themselves: a network namespace per test, joined to the root
namespace by veth pairs ("links"), and faults on those links.

The faults use iproute2 only. This machine's kernel has no netem (``CONFIG_NET_SCH_NETEM`` is not set,
and it cannot load modules), so ``tc qdisc ... netem`` is not available; instead, on the namespace's
end of a link, a ``clsact`` qdisc carries filters whose action redirects the packets they match to an
``ifb`` device that is down, which drops them silently:

- ``blackhole()``: a u32 match-all filter in both directions. Every IPv4 packet is dropped; nothing
  is refused, so connections hang and time out, as behind a dead router or a silent firewall. ARP
  still passes: were it dropped too, the neighbour entry would fail after a while and new connections
  would fail fast with "no route to host", which is not a blackhole.
- ``loss(fraction)``: a classic-BPF filter (``ld rand``) matching that fraction of the packets.
- ``heal()``: the filters removed.

Everything a fault touches lives inside the namespace, so deleting the namespace removes it all.

Names carry the pid of the test process that made them, so that ``sweep()`` can remove what a crashed
run left behind and nothing else: namespaces ``fochaos-<pid>-<n>``, root-side links
``fc<kind><pid:06x><n:02x>r`` (interface names are at most 15 characters) and the broker anchor
``fca<pid:06x>``. Addresses come from 10.213.0.0/16: /30s for links, /32s on anchors.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import random
import re
import signal
import subprocess
import time
from dataclasses import dataclass

NS_PREFIX = "fochaos-"
LINK_NAME = re.compile(r"^fc([a-z])([0-9a-f]{6})")
SUPERNET = ipaddress.ip_network("10.213.0.0/16")
ANCHOR_BLOCK = 255  # 10.213.255.0/24 holds the anchors; links take /30s from the rest
DROP_DEVICE = "fcdrop"
COMMAND_TIMEOUT = 20.0
_sequence = itertools.count()


class NetnsError(RuntimeError):
    """An iproute2 command failed (the message has the command and its output)."""


def run(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in run("ip", "-o", "-4", "addr", "show").splitlines():
        m = re.search(r"inet (\S+)", line)
        if m:
            nets.append(ipaddress.ip_interface(m.group(1)).network)
    return nets


def _free_block(prefix: int, blocks: list[int]) -> ipaddress.IPv4Network:
    """A random /prefix inside 10.213.<block>.0/24 for one of ``blocks``, overlapping no address in use
    (the first and last /prefix of a block are left out, so an anchor's /32 is never .0 or .255)."""
    used = _used_networks()
    for _ in range(200):
        base = ipaddress.ip_network(f"10.213.{random.choice(blocks)}.0/24")
        candidate = random.choice(list(base.subnets(new_prefix=prefix))[1:-1])
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise NetnsError(f"no free /{prefix} left in {SUPERNET}")


@dataclass(frozen=True)
class Anchor:
    """An address of the root namespace that is on no link: an ifb device that is up, with a /32. A
    broker listens there (``scripts/kafka --external-host``), and every namespace routes to it through
    its own link, so a fault on one namespace's link cuts only that namespace off."""

    device: str
    address: str

    @classmethod
    def create(cls) -> Anchor:
        device = f"fca{os.getpid():06x}"
        run("ip", "link", "del", device, check=False)
        address = str(_free_block(32, [ANCHOR_BLOCK]).network_address)
        run("ip", "link", "add", device, "type", "ifb")
        try:
            run("ip", "addr", "add", f"{address}/32", "dev", device)
            run("ip", "link", "set", device, "up")
        except NetnsError:
            run("ip", "link", "del", device, check=False)
            raise
        return cls(device, address)

    def close(self) -> None:
        run("ip", "link", "del", self.device, check=False)


@dataclass(frozen=True)
class Link:
    """A veth pair between the root namespace (``root_ip``) and a namespace (``ns_ip``)."""

    ns: str
    root_dev: str
    ns_dev: str
    root_ip: str
    ns_ip: str
    routes: tuple[str, ...]

    def blackhole(self) -> None:
        """Drop every packet, both ways, silently."""
        self._drop(["u32", "match", "u32", "0", "0"])

    def loss(self, fraction: float) -> None:
        """Drop that fraction of the packets, both ways, at random."""
        if not 0 < fraction < 1:
            raise ValueError("loss fraction must be between 0 and 1 (blackhole() drops everything)")
        threshold = int(fraction * 2**32)
        # A = random u32; if A >= threshold: no match (ret 0), else match (ret -1: the default class).
        bytecode = f"4,32 0 0 {2**32 - 4096 + 56},53 1 0 {threshold},6 0 0 {2**32 - 1},6 0 0 0"
        self._drop(["bpf", "bytecode", bytecode])

    def heal(self) -> None:
        for direction in ("ingress", "egress"):
            run("tc", "-n", self.ns, "filter", "del", "dev", self.ns_dev, direction)

    def dropped(self) -> int:
        """Packets the fault filters dropped so far (both directions)."""
        total = 0
        for direction in ("ingress", "egress"):
            out = run("tc", "-n", self.ns, "-s", "filter", "show", "dev", self.ns_dev, direction)
            total += sum(int(n) for n in re.findall(r"Sent \d+ bytes (\d+) pkt", out))
        return total

    def _drop(self, match: list[str]) -> None:
        self.heal()
        for direction in ("ingress", "egress"):
            run(
                "tc", "-n", self.ns, "filter", "add", "dev", self.ns_dev, direction, "protocol", "ip",
                *match, "action", "mirred", "egress", "redirect", "dev", DROP_DEVICE,
            )  # fmt: skip


class Namespace:
    """A network namespace of this test process; ``command(argv)`` runs a program inside it."""

    def __init__(self) -> None:
        self.name = f"{NS_PREFIX}{os.getpid()}-{next(_sequence)}"
        self.links: list[Link] = []
        run("ip", "netns", "add", self.name)
        try:
            run("ip", "-n", self.name, "link", "set", "lo", "up")
            run("ip", "-n", self.name, "link", "add", DROP_DEVICE, "type", "ifb")  # stays down: drops
        except NetnsError:
            self.close()
            raise

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def link(self, kind: str, routes: tuple[str, ...] = ()) -> Link:
        """A new veth pair to the root namespace; ``routes`` (addresses of the root namespace, such as an
        anchor) are reached through it from inside."""
        tag = f"fc{kind}{os.getpid():06x}{next(_sequence) % 256:02x}"
        root_dev, peer = f"{tag}r", f"{tag}n"
        net = _free_block(30, [b for b in range(256) if b != ANCHOR_BLOCK])
        root_ip, ns_ip = (str(h) for h in net.hosts())
        run("ip", "link", "add", root_dev, "type", "veth", "peer", "name", peer)
        try:
            run("ip", "link", "set", peer, "netns", self.name)
            run("ip", "addr", "add", f"{root_ip}/30", "dev", root_dev)
            run("ip", "link", "set", root_dev, "up")
            run("ip", "-n", self.name, "addr", "add", f"{ns_ip}/30", "dev", peer)
            run("ip", "-n", self.name, "link", "set", peer, "up")
            run("tc", "-n", self.name, "qdisc", "add", "dev", peer, "clsact")
            for address in routes:
                run("ip", "-n", self.name, "route", "add", f"{address}/32", "via", root_ip)
        except NetnsError:
            run("ip", "link", "del", root_dev, check=False)
            raise
        link = Link(self.name, root_dev, peer, root_ip, ns_ip, routes)
        self.links.append(link)
        return link

    def close(self) -> None:
        """Kill what still runs inside (started by this test), then delete the namespace and its links."""
        _remove_namespace(self.name)
        for link in self.links:
            run("ip", "link", "del", link.root_dev, check=False)


def _remove_namespace(name: str) -> None:
    pids = [int(p) for p in run("ip", "netns", "pids", name, check=False).split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.05)
    run("ip", "netns", "del", name, check=False)


def sweep() -> list[str]:
    """Remove namespaces and links of this suite whose test process is gone (a crashed run's)."""
    removed = []
    for line in run("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        m = re.fullmatch(rf"{NS_PREFIX}(\d+)-\d+", name)
        if m and not _alive(int(m.group(1))):
            _remove_namespace(name)
            removed.append(name)
    for line in run("ip", "-o", "link", "show", check=False).splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        dev = parts[1].strip().split("@")[0]
        m = LINK_NAME.match(dev)
        if m and not _alive(int(m.group(2), 16)):
            run("ip", "link", "del", dev, check=False)
            removed.append(dev)
    return removed


def unavailable() -> str | None:
    """Why this machine cannot make the chaos tests' network faults, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"`{tool}` not found (install iproute2: scripts/chaos-setup)"
    try:
        ns = Namespace()
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        ns.link("t").blackhole()
    except (NetnsError, subprocess.TimeoutExpired) as exc:
        return f"cannot make a blackhole on a veth link (veth, ifb, clsact, u32, mirred): {exc}"
    finally:
        ns.close()
    return None
