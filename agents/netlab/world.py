"""The lab world of the end-to-end tests, the demo and the benchmarks: an internet, three nodes, a client.

    with start_anvil() as anvil, Lab() as lab:
        world = build_world(lab, chain_port=anvil.port)
        run_in(world.client, ["python3", "-c", "..."])       # resolves files.example via the lab DNS

What :func:`build_world` makes (every address is in the returned :class:`World`):

* an internet (``Lab.add_internet``, TEST-NET-2 by default) with two server hosts on it:
  ``web`` runs the lab HTTP server on port 80 (one random file, its SHA-256 known) and the lab DNS
  zone server on port 53 (``files.example`` -> web, ``blocked.example`` -> ``blocked``), and the
  chain as a remote RPC provider at ``chain.example:8545`` (``chain.example`` -> web; an
  :class:`RpcBridge` on web's internet address: :attr:`World.remote_rpc_url`);
  ``blocked`` runs the same HTTP server, as the target of exit-policy tests;
* public nodes ``node_a`` (region NL) and ``node_b`` (DE) on the internet, and ``node_c`` (region FR)
  behind a port-restricted NAT (a home connection, the common case);
* a ``client`` host, public or behind a NAT of the type given;
* in every host (nodes, client, servers) an :class:`RpcBridge` at ``127.0.0.1:8545`` forwarding to the
  test's chain at ``127.0.0.1:<chain_port>`` of the caller, and ``/etc/netns/<ns>/resolv.conf``
  naming the lab DNS server, so programs run with ``ip netns exec`` (``Namespace.run``/``spawn``,
  :func:`run_in`, :func:`spawn_in`) resolve ``files.example`` with the ordinary libc resolver.
  (A thread inside ``Namespace.enter()`` still reads the caller's /etc/resolv.conf: resolve with
  :func:`dns_query` there.)

The lab's :meth:`Lab.close` undoes all of it: bridges closed and resolv.conf folders removed
(``lab.defer``), servers stopped by PID, namespaces deleted, the random file removed.

Servers are real processes (``python -m agents.netlab.http_server``; ``python -m agents.netlab.dns``,
or dnslib's own zone server until that module exists), started inside their namespace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from importlib.util import find_spec
from pathlib import Path

from agents.netlab import Internet, Lab, LabError, Namespace, NatRouter, NatType, RpcBridge
from agents.netlab.http_server import make_random_file

__all__ = [
    "ANVIL_CHAIN_ID",
    "Anvil",
    "BLOCKED_NAME",
    "CHAIN_NAME",
    "FILE_NAME",
    "FILES_NAME",
    "NodeHost",
    "REPO_ROOT",
    "RPC_LISTEN",
    "World",
    "build_world",
    "dns_query",
    "free_port",
    "run_in",
    "sha256_file",
    "spawn_in",
    "start_anvil",
    "warren_argv",
    "warren_env",
]

#: The repository root (``warren`` commands run with it as their working folder).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Name of the HTTP server's file in its URL (``http://files.example/blob.bin``).
FILE_NAME = "blob.bin"
#: DNS name of the file server (the exit policy's allowed domain in e2e tests).
FILES_NAME = "files.example"
#: DNS name of a second server that exit-policy tests leave off the allow-list.
BLOCKED_NAME = "blocked.example"
#: Where each host's RpcBridge listens: the address a local light client would have.
RPC_LISTEN = ("127.0.0.1", 8545)
#: DNS name of the chain as a remote RPC provider on the lab's internet (served from ``web``, on
#: RPC_LISTEN's port): what a real client uses (README, "Connect"), reached outside the tunnel.
CHAIN_NAME = "chain.example"
#: anvil's default chain id (``--chain-id`` not given).
ANVIL_CHAIN_ID = 31337
#: TTL of the lab zone's records (seconds); short, as exit-policy tests watch sets expire.
DNS_TTL = 60
#: Bound on waiting for a server process to answer (seconds); they start in well under one.
READY_S = 15.0


# -- processes inside namespaces ------------------------------------------------------------------


def warren_env(**extra: str) -> dict[str, str]:
    """The caller's environment with the repository importable and the venv's bin first on PATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def warren_argv(*args: str) -> list[str]:
    """``warren ARGS...`` as this interpreter runs it: ``[python, -m, agents.cli, *args]``."""
    return [sys.executable, "-m", "agents.cli", *args]


def run_in(ns: Namespace, argv: Sequence[str], timeout: float = 60.0, *, check: bool = False,
           env: dict[str, str] | None = None, input: bytes | None = None,
           ) -> subprocess.CompletedProcess:
    """Run ``argv`` to completion inside ``ns`` from the repo root; capture stdout and stderr.

    Unlike ``Namespace.run`` it sets the working folder and :func:`warren_env`, and by default
    returns a failed command's result instead of raising (tests assert on its output).

    Raises:
        LabError: ``check`` and the command exited non-zero.
        subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds (it is killed).
    """
    proc = subprocess.run(["ip", "netns", "exec", ns.name, *argv], capture_output=True,
                          timeout=timeout, input=input, cwd=REPO_ROOT,
                          env=warren_env() if env is None else env)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)!r} in {ns.short} exited {proc.returncode}: "
                       f"{proc.stderr.decode(errors='replace').strip()}")
    return proc


def spawn_in(ns: Namespace, argv: Sequence[str], *, env: dict[str, str] | None = None,
             stdout: int | None = subprocess.DEVNULL, stderr: int | None = subprocess.DEVNULL,
             ) -> subprocess.Popen:
    """Start a long-running ``argv`` inside ``ns`` from the repo root; the lab stops it by PID.

    ``ip netns exec`` execs in place, so the PID is the command's own. Stopped at cleanup through
    ``lab.defer`` + ``lab.stop`` (SIGTERM, then SIGKILL after a grace period).
    """
    proc = subprocess.Popen(["ip", "netns", "exec", ns.name, *argv], cwd=REPO_ROOT,
                            env=warren_env() if env is None else env, stdout=stdout,
                            stderr=stderr, stdin=subprocess.DEVNULL)
    ns.lab.defer(lambda: ns.lab.stop(proc))
    return proc


# -- the chain ------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on the caller's loopback right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rpc(url: str, method: str, params: list | None = None, timeout: float = 5.0):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["result"]


@dataclasses.dataclass
class Anvil:
    """A plain anvil process on the caller's loopback (not ape's), stopped by PID."""

    proc: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        """Its JSON-RPC URL in the caller's namespace."""
        return f"http://127.0.0.1:{self.port}"

    def chain_id(self) -> int:
        """``eth_chainId``, asked over HTTP."""
        return int(_rpc(self.url, "eth_chainId"), 16)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s; idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=3)


@contextlib.contextmanager
def start_anvil(port: int | None = None, *args: str) -> Iterator[Anvil]:
    """Run ``anvil --port P --silent ARGS...`` (the venv's) until the block ends.

    Raises:
        LabError: anvil exited or did not answer ``eth_chainId`` within READY_S seconds.
    """
    binary = shutil.which("anvil", path=warren_env()["PATH"])
    if binary is None:
        raise LabError("anvil is not installed (make installs it into .venv/bin)")
    port = port or free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--silent", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    anvil = Anvil(proc, port)
    try:
        deadline = time.monotonic() + READY_S
        while True:
            if proc.poll() is not None:
                raise LabError(f"anvil exited {proc.returncode}: "
                               f"{proc.stderr.read().decode(errors='replace').strip()}")
            try:
                anvil.chain_id()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise LabError(f"anvil did not answer on port {port} in {READY_S} s") from None
                time.sleep(0.05)
        yield anvil
    finally:
        anvil.stop()
        if proc.stderr:
            proc.stderr.close()


# -- DNS ------------------------------------------------------------------------------------------


def dns_query(ns: Namespace, server: str, name: str, qtype: str = "A", port: int = 53,
              timeout: float = 2.0) -> list[str]:
    """Ask ``server`` for ``name`` from inside ``ns`` (this thread, dnslib); return the answers' data.

    Raises:
        TimeoutError: no answer within ``timeout`` seconds.
    """
    from dnslib import DNSRecord

    query = DNSRecord.question(name, qtype)
    with ns.enter():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(timeout)
        sock.sendto(query.pack(), (server, port))
        reply = DNSRecord.parse(sock.recvfrom(4096)[0])
    return [str(rr.rdata) for rr in reply.rr]


def _dns_argv(bind: str, records: dict[str, str], workdir: Path) -> list[str]:
    if find_spec("agents.netlab.dns") is not None:
        argv = [sys.executable, "-m", "agents.netlab.dns", "--bind", bind, "--port", "53",
                "--ttl", str(DNS_TTL)]
        for name, address in records.items():
            argv += ["--record", f"{name}={address}"]
        return argv
    # Until agents.netlab.dns lands: dnslib's own zone-file server does the same job.
    zone = workdir / "lab.zone"
    zone.write_text("".join(f"{name}. {DNS_TTL} IN A {address}\n" for name, address in records.items()))
    return [sys.executable, "-m", "dnslib.zoneresolver", "--zone", str(zone), "--address", bind,
            "--port", "53", "--log=-request,-reply,-truncated,-error"]


# -- the world ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NodeHost:
    """A node's host in the world.

    Attributes:
        name: ``"node_a"``, ``"node_b"`` or ``"node_c"``.
        ns: its namespace.
        region: ISO 3166 region it registers with.
        address: its own address (a LAN address behind a NAT).
        public_address: what the internet sees (the NAT router's address behind a NAT).
        nat: its NAT router, or None for a public host.
    """

    name: str
    ns: Namespace
    region: str
    address: str
    public_address: str
    nat: NatRouter | None = None


@dataclasses.dataclass
class World:
    """Every namespace, address and process of a world made by :func:`build_world`.

    Attributes:
        lab: the lab that owns it all.
        internet: the internet bridge (its ``namespace`` is the bridge; servers are hosts on it).
        chain_port: the caller's chain port the bridges forward to.
        web: the host serving the file over HTTP (port 80) and the lab zone over DNS (port 53).
        blocked: a second HTTP server host, named ``blocked.example``.
        dns_server: the DNS server's address (web's).
        names: the lab zone: DNS name -> IPv4 address.
        file_name, file_path, file_size, file_sha256: the served file (its URL name, local path,
            size in bytes and SHA-256 hex); ``blocked`` serves the same file.
        node_a, node_b, node_c: the node hosts (``node_c`` behind a port-restricted NAT; None
            unless ``nat_node``).
        client: the client's namespace; client_nat its NAT router, if any.
        bridges: namespace short name -> its RpcBridge (at ``127.0.0.1:8545`` inside).
        servers: process name -> Popen of the lab's servers (``http``, ``http_blocked``, ``dns``).
        workdir: the temporary folder holding the file (removed at cleanup).
    """

    lab: Lab
    internet: Internet
    chain_port: int
    web: Namespace
    blocked: Namespace
    dns_server: str
    names: dict[str, str]
    file_name: str
    file_path: Path
    file_size: int
    file_sha256: str
    node_a: NodeHost
    node_b: NodeHost
    node_c: NodeHost | None
    client: Namespace
    client_nat: NatRouter | None
    bridges: dict[str, RpcBridge]
    servers: dict[str, subprocess.Popen]
    workdir: Path

    @property
    def nodes(self) -> list[NodeHost]:
        """The node hosts, public ones first."""
        return [n for n in (self.node_a, self.node_b, self.node_c) if n is not None]

    @property
    def hosts(self) -> list[Namespace]:
        """Every end host (servers, nodes, client); NAT routers and the bridge excluded."""
        return [self.web, self.blocked, *(n.ns for n in self.nodes), self.client]

    @property
    def rpc_url(self) -> str:
        """The chain's URL inside any host of the world."""
        return f"http://{RPC_LISTEN[0]}:{RPC_LISTEN[1]}"

    @property
    def remote_rpc_url(self) -> str:
        """The chain as a remote RPC on the lab's internet, by name (``http://chain.example:8545``)."""
        return f"http://{CHAIN_NAME}:{RPC_LISTEN[1]}"

    @property
    def web_address(self) -> str:
        """The file server's address."""
        return self.names[FILES_NAME]

    @property
    def blocked_address(self) -> str:
        """The second server's address."""
        return self.names[BLOCKED_NAME]

    @property
    def file_url(self) -> str:
        """``http://files.example/blob.bin`` (by name: resolved through the lab DNS)."""
        return f"http://{FILES_NAME}/{self.file_name}"


def _wait_tcp(ns: Namespace, address: str, port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_S
    while True:
        if proc.poll() is not None:
            raise LabError(f"server for {address}:{port} in {ns.short} exited {proc.returncode}")
        with ns.enter():
            sock = socket.socket()
        with sock:
            sock.settimeout(1.0)
            if sock.connect_ex((address, port)) == 0:
                return
        if time.monotonic() > deadline:
            raise LabError(f"nothing listens on {address}:{port} in {ns.short} after {READY_S} s")
        time.sleep(0.05)


def _wait_dns(ns: Namespace, server: str, name: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_S
    while True:
        if proc.poll() is not None:
            raise LabError(f"DNS server in {ns.short} exited {proc.returncode}")
        with contextlib.suppress(OSError):
            if dns_query(ns, server, name, timeout=0.3):
                return
        if time.monotonic() > deadline:
            raise LabError(f"DNS server {server} does not answer {name} after {READY_S} s")


def _resolv_conf(lab: Lab, ns: Namespace, server: str) -> None:
    """``/etc/netns/<ns>/resolv.conf`` (``ip netns exec`` bind-mounts it on /etc/resolv.conf)."""
    folder = Path("/etc/netns") / ns.name
    folder.mkdir(parents=True, exist_ok=True)
    lab.defer(lambda: shutil.rmtree(folder, ignore_errors=True))
    # One try of one second, so a test of a dead server fails fast rather than after 5 x 2 x 5 s.
    (folder / "resolv.conf").write_text(f"nameserver {server}\noptions timeout:1 attempts:2\n")


def build_world(lab: Lab, *, chain_port: int, file_size: int = 8 << 20, nat_node: bool = True,
                client_nat: NatType | None = None, internet_subnet: str = "198.51.100.0/24",
                regions: tuple[str, str, str] = ("NL", "DE", "FR")) -> World:
    """Build the e2e world inside ``lab`` (see the module docstring); ``lab.close()`` undoes it.

    Args:
        lab: an open lab (as root).
        chain_port: port of the chain on the caller's 127.0.0.1 (anvil's).
        file_size: bytes of the random file the HTTP servers serve.
        nat_node: whether to add ``node_c`` behind a port-restricted NAT.
        client_nat: put the client behind a NAT of this type (None: a public client).
        internet_subnet: the internet's IPv4 subnet (RFC 5737 TEST-NET-2 by default).
        regions: the regions of node_a, node_b and node_c.

    Raises:
        LabError: a command or a server failed to start.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"{lab.prefix}-world-"))
    lab.defer(lambda: shutil.rmtree(workdir, ignore_errors=True))
    file_path = workdir / FILE_NAME
    file_sha256 = make_random_file(file_path, file_size)

    internet = lab.add_internet(internet_subnet)
    web, blocked = lab.add_host("web"), lab.add_host("blocked")
    web_address, blocked_address = internet.attach(web), internet.attach(blocked)
    names = {FILES_NAME: web_address, BLOCKED_NAME: blocked_address, CHAIN_NAME: web_address}

    def public_node(name: str, region: str) -> NodeHost:
        ns = lab.add_host(name.replace("_", "-"))
        address = internet.attach(ns)
        return NodeHost(name, ns, region, address, address)

    node_a, node_b = public_node("node_a", regions[0]), public_node("node_b", regions[1])
    node_c = None
    if nat_node:
        nat_c = lab.add_nat("nat-c", NatType.PORT_RESTRICTED, internet)
        ns_c = lab.add_host("node-c")
        node_c = NodeHost("node_c", ns_c, regions[2], nat_c.attach(ns_c), nat_c.public_address, nat_c)
    client = lab.add_host("client")
    nat = None
    if client_nat is None:
        internet.attach(client)
    else:
        nat = lab.add_nat("nat-client", client_nat, internet)
        nat.attach(client)

    servers: dict[str, subprocess.Popen] = {}
    for key, host, address in (("http", web, web_address), ("http_blocked", blocked, blocked_address)):
        servers[key] = spawn_in(host, [sys.executable, "-m", "agents.netlab.http_server", "--bind",
                                       address, "--port", "80", "--file", f"{FILE_NAME}={file_path}"])
    servers["dns"] = spawn_in(web, _dns_argv(web_address, names, workdir))
    for key, host, address in (("http", web, web_address), ("http_blocked", blocked, blocked_address)):
        _wait_tcp(host, address, 80, servers[key])
    _wait_dns(web, web_address, FILES_NAME, servers["dns"])

    world = World(lab=lab, internet=internet, chain_port=chain_port, web=web, blocked=blocked,
                  dns_server=web_address, names=names, file_name=FILE_NAME, file_path=file_path,
                  file_size=file_size, file_sha256=file_sha256, node_a=node_a, node_b=node_b,
                  node_c=node_c, client=client, client_nat=nat, bridges={}, servers=servers,
                  workdir=workdir)
    for ns in world.hosts:
        bridge = RpcBridge(ns.name, ("127.0.0.1", chain_port), RPC_LISTEN)
        lab.defer(bridge.close)
        world.bridges[ns.short] = bridge
        _resolv_conf(lab, ns, web_address)
    remote = RpcBridge(web.name, ("127.0.0.1", chain_port), (web_address, RPC_LISTEN[1]))
    lab.defer(remote.close)
    world.bridges["remote_rpc"] = remote
    for ns in lab.namespaces:
        ns.ip("link", "set", "lo", "up")  # add_host does it already; cheap to be sure
    return world


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
