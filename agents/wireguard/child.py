"""A :class:`~agents.wireguard.runtime.Tunnel` in a child process of its own, driven over a socket pair.

Why: pyca/cryptography keeps the GIL while it encrypts, so two tunnels in one process share one core
(`warren connect --hops 2` runs the relay's tunnel and the exit's). :class:`ChildTunnel` runs one of
them in ``python -m agents.wireguard.child``: the child owns the Tunnel (TUN device, UDP socket, the
unchanged sans-I/O core and its threads) and answers the parent's few calls: peers and their
counters (metering, liveness), add/remove a peer (failover), ``ip`` commands on its TUN, overlay
datagrams both ways (discovery runs on the tunnel's socket), stop.

* Secrets: the private key travels in the first message over the inherited socket pair, never on
  the command line or in the environment (the command line holds only the fd number and the
  parent's pid).
* The child dies with the parent: ``PR_SET_PDEATHSIG`` (SIGKILL), set first thing, then a check
  that the parent is still the one that started it; and the socket pair's end-of-file stops it
  too. Its TUN device (not persistent) disappears with it, and with the TUN the routes into it.
* The parent notices a dead child: one long-lived monitor thread starts the child (the "parent" of
  ``PR_SET_PDEATHSIG`` is the thread that forked, so it is never a thread that ends before the
  child should), waits for it by pid (reaping it), fails the calls in flight, and starts it again
  with the same key (:attr:`ChildTunnel.restarts`, at most :data:`MAX_RESTARTS` in
  :data:`RESTART_WINDOW_S`), then calls :attr:`ChildTunnel.on_restart` so the owner puts back its
  routes. Until then the peers' counters read None, which the owner's liveness takes for a silent
  node (the client agent fails over); past the restart limit the tunnel stays down: nothing is
  routed into a TUN that does not exist, so a full tunnel's kill switch holds (fail closed).

Messages are pickled: both ends are this module, over a private socket pair (SOCK_SEQPACKET keeps
message boundaries); nothing from the network is unpickled.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agents.wireguard.backend import PeerStats, TunnelBackend
from agents.wireguard.config import InterfaceConfig, PeerConfig
from agents.wireguard.errors import LocalProtocolError

__all__ = ["ChildTunnel", "ChildTunnelError", "MAX_RESTARTS", "RESTART_WINDOW_S"]

log = logging.getLogger(__name__)

#: Restarts of a dead child allowed within RESTART_WINDOW_S seconds; past them the tunnel stays down
#: (a child that dies at once would otherwise be restarted in a loop).
MAX_RESTARTS = 3
RESTART_WINDOW_S = 60.0
#: How long a call waits for the child's answer, and the child's start for its first answer (s).
CALL_TIMEOUT_S = 10.0
START_TIMEOUT_S = 20.0
#: How long close() waits for the child to stop by itself before killing it (s).
STOP_WAIT_S = 3.0
#: Largest message either way (a datagram, a peer listing), within the socket pair's buffers.
MAX_MESSAGE = 1 << 20
#: Overlay datagrams from the child waiting for the demux callback at most (more are dropped, as a
#: full socket buffer would drop them).
DEMUX_QUEUE = 1024
#: prctl(2) option.
PR_SET_PDEATHSIG = 1


class ChildTunnelError(RuntimeError):
    """The child is not running (dead, restarting, stopped) or did not answer in time."""


def _send(sock: socket.socket, lock: threading.Lock, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    with lock:
        sock.sendall(data) if sock.type == socket.SOCK_STREAM else sock.send(data)


class _ChildTun:
    """The child's TUN as the owner sees it: its name, and ``ip`` commands run by the child (in its
    network namespace, as :meth:`agents.wireguard.tun.TunDevice.ip`)."""

    def __init__(self, owner: "ChildTunnel", name: str) -> None:
        self._owner, self.name = owner, name

    def ip(self, *args: str) -> None:
        self._owner._call("ip", args)


class _Generation:
    """One child process: its Popen, the parent's end of the socket pair, the calls in flight."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket) -> None:
        self.proc, self.sock = proc, sock
        self.send_lock = threading.Lock()
        self.pending: dict[int, list] = {}  # call id -> [event, outcome]
        self.pending_lock = threading.Lock()
        self.ready = threading.Event()
        self.hello: dict = {}


class ChildTunnel(TunnelBackend):
    """A started Tunnel running in a child process; the calls a client agent makes on a Tunnel.

    Construct it in the network namespace the tunnel should live in; it returns once the child's
    tunnel is up (or raises :class:`ChildTunnelError`).

    Args:
        config: private key, listen port, MTU (addresses and peers too; the client agent adds them).
        ifname: the TUN's name.
        uapi / manage_routes / merge_udp: as :class:`~agents.wireguard.runtime.Tunnel`'s.
    """

    def __init__(self, config: InterfaceConfig, ifname: str, *, uapi: bool = False, manage_routes: bool = False,
                 merge_udp: bool = True) -> None:
        self.config, self.ifname = config, ifname
        self._options = {"uapi": uapi, "manage_routes": manage_routes, "merge_udp": merge_udp}
        self.tun = _ChildTun(self, ifname)
        #: Called (on the monitor thread, no argument) after a dead child was started again.
        self.on_restart: Callable[[], None] | None = None
        #: Each dead child replaced: when it was found dead (time.time()), its exit status, the new pid.
        self.restarts: list[dict] = []
        self._psk: dict[bytes, bytes | None] = {}  # as Tunnel's (agents.client.discovery reads it)
        self._demux: Callable[[bytes, tuple], None] | None = None
        self._ids = itertools.count(1)  # 0 is a call nobody waits for
        self._gen: _Generation | None = None
        self._closing = threading.Event()
        self._down = threading.Event()  # no child any more: past the restart limit, or closed
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._datagrams: collections.deque = collections.deque()
        self._datagram_ready = threading.Event()
        threading.Thread(target=self._demux_loop, name=f"{ifname}-child-demux", daemon=True).start()
        self._monitor = threading.Thread(target=self._monitor_loop, name=f"{ifname}-child", daemon=True)
        self._monitor.start()
        self._started.wait(START_TIMEOUT_S + 1)
        if self._start_error is not None or self._gen is None or not self._gen.ready.is_set():
            self.close()
            raise ChildTunnelError(f"{ifname}: the tunnel process did not start: {self._start_error}")

    # -- the child's life -------------------------------------------------------------------------

    def _spawn(self) -> _Generation:
        """Start a child, hand it the configuration through the socket pair, wait for its hello."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            env = dict(os.environ)
            root = str(Path(__file__).resolve().parents[2])  # the folder holding the agents package
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            proc = subprocess.Popen([sys.executable, "-m", "agents.wireguard.child", str(theirs.fileno()),
                                     str(os.getpid())], pass_fds=(theirs.fileno(),), env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        gen = _Generation(proc, ours)
        threading.Thread(target=self._reader, args=(gen,), name=f"{self.ifname}-child-reader", daemon=True).start()
        _send(ours, gen.send_lock, {"private_key": self.config.private_key, "ifname": self.ifname,
                                    "listen_port": self.config.listen_port or 0, "mtu": self.config.mtu,
                                    "addresses": list(self.config.addresses), "peers": list(self.config.peers),
                                    "options": self._options, "log_level": logging.getLogger().level})
        deadline = time.monotonic() + START_TIMEOUT_S
        while not gen.ready.wait(0.1):  # a child that fails to start (a TUN name in use) ends at once
            if proc.poll() is not None or time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                code = proc.wait()
                ours.close()
                raise ChildTunnelError(f"{self.ifname}: no hello from the tunnel process (exit status {code})")
        return gen

    def _monitor_loop(self) -> None:
        """Start the child, reap it by pid when it ends, start it again while allowed."""
        try:
            self._gen = self._spawn()
        except BaseException as exc:
            self._start_error = exc
            self._down.set()
            self._started.set()
            return
        self._started.set()
        while True:
            gen = self._gen
            code = gen.proc.wait()  # reaped by pid
            self._fail_pending(gen, f"the tunnel process ended (exit status {code})")
            with contextlib.suppress(OSError):
                gen.sock.close()
            if self._closing.is_set():
                break
            now = time.time()
            recent = [r for r in self.restarts if now - r["at"] < RESTART_WINDOW_S]
            log.error("%s: the tunnel process %d died (exit status %d)", self.ifname, gen.proc.pid, code)
            if len(recent) >= MAX_RESTARTS:
                log.error("%s: %d restarts within %.0f s: the tunnel stays down (its TUN is gone: nothing is "
                          "routed through it)", self.ifname, len(recent), RESTART_WINDOW_S)
                break
            try:
                self._gen = self._spawn()
            except BaseException as exc:
                log.error("%s: the tunnel process could not be started again: %s", self.ifname, exc)
                break
            self.restarts.append({"at": now, "exit_status": code, "pid": self._gen.proc.pid})
            log.warning("%s: tunnel process started again (pid %d)", self.ifname, self._gen.proc.pid)
            if self._demux is not None:
                with contextlib.suppress(Exception):
                    self._call("set_demux", True)
            callback = self.on_restart
            if callback is not None:
                try:
                    callback()
                except Exception:
                    log.exception("%s: on_restart failed", self.ifname)
        self._down.set()

    def _demux_loop(self) -> None:
        """Overlay datagrams from the child to the demux callback, off the reader thread."""
        while not self._down.is_set():
            try:
                data, source = self._datagrams.popleft()
            except IndexError:
                self._datagram_ready.wait(0.2)
                self._datagram_ready.clear()
                continue
            demux = self._demux
            if demux is not None:
                try:
                    demux(data, source)
                except Exception:
                    log.exception("%s: demux callback failed", self.ifname)

    def _reader(self, gen: _Generation) -> None:
        """The answers and the overlay datagrams the child sends, until it hangs up."""
        while True:
            try:
                data = gen.sock.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                self._fail_pending(gen, "the tunnel process hung up")
                return
            kind, *rest = pickle.loads(data)
            if kind == "demux":  # handed on: the callback may call the child, whose answer we read
                if len(self._datagrams) < DEMUX_QUEUE:
                    self._datagrams.append(rest)
                    self._datagram_ready.set()
            elif kind == "hello":
                gen.hello = rest[0]
                gen.ready.set()
            else:  # "ok" / "error", call id, value
                call_id, value = rest
                with gen.pending_lock:
                    waiter = gen.pending.pop(call_id, None)
                if waiter is not None:
                    waiter[1] = (kind, value)
                    waiter[0].set()

    @staticmethod
    def _fail_pending(gen: _Generation, why: str) -> None:
        with gen.pending_lock:
            waiters, gen.pending = list(gen.pending.values()), {}
        for waiter in waiters:
            waiter[1] = ("error", ChildTunnelError(why))
            waiter[0].set()

    def _call(self, method: str, *args, timeout: float = CALL_TIMEOUT_S, wait: bool = True):
        """Call ``method`` in the child. ``wait``: while a dead child is being replaced, wait (up to
        ``timeout``) for the new one rather than fail (a failover's add_peer then reaches it)."""
        deadline = time.monotonic() + timeout
        while True:
            gen = self._gen
            if gen is not None and gen.proc.poll() is None and not self._down.is_set():
                break
            if not wait or self._down.is_set() or self._closing.is_set() or time.monotonic() >= deadline:
                raise ChildTunnelError(f"{self.ifname}: the tunnel process is not running")
            time.sleep(0.05)
        call_id, waiter = next(self._ids), [threading.Event(), None]
        with gen.pending_lock:
            gen.pending[call_id] = waiter
        try:
            _send(gen.sock, gen.send_lock, ("call", call_id, method, args))
        except OSError as exc:
            with gen.pending_lock:
                gen.pending.pop(call_id, None)
            raise ChildTunnelError(f"{self.ifname}: the tunnel process is not running ({exc})") from None
        if not waiter[0].wait(timeout):
            with gen.pending_lock:
                gen.pending.pop(call_id, None)
            raise ChildTunnelError(f"{self.ifname}: no answer to {method} within {timeout:.0f} s")
        kind, value = waiter[1]
        if kind == "error":
            raise value
        return value

    # -- what the owner calls ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running child's pid (None before it started)."""
        return self._gen.proc.pid if self._gen is not None else None

    @property
    def alive(self) -> bool:
        """Whether a child runs now (False while one is being replaced, and once down)."""
        gen = self._gen
        return gen is not None and gen.proc.poll() is None and not self._down.is_set()

    @property
    def running(self) -> bool:
        return self.alive

    @property
    def public_key(self) -> bytes:
        return self._gen.hello["public_key"]

    @property
    def listen_port(self) -> int:
        return self._gen.hello["listen_port"]

    @property
    def sock(self) -> socket.socket:
        """A socket in the tunnel's network namespace (agents.overlay.wgrelay's ``in_netns_of``)."""
        return self._gen.sock

    def add_peer(self, peer: PeerConfig) -> None:
        self._call("add_peer", peer)
        self._psk[peer.public_key] = peer.preshared_key

    def remove_peer(self, public_key: bytes) -> None:
        self._call("remove_peer", public_key)
        self._psk.pop(public_key, None)

    def set_allowed_ips(self, public_key: bytes, cidrs: list[str]) -> None:
        self._call("set_allowed_ips", public_key, list(cidrs))

    def peer_counters(self, public_key: bytes) -> tuple[int, int] | None:
        """(rx_bytes, tx_bytes) of one peer; None if it is not a peer or no child runs now."""
        try:
            return self._call("peer_counters", public_key, wait=False)
        except ChildTunnelError:
            return None

    def peers(self) -> list[PeerStats]:
        """The peers' stats (none while no child runs)."""
        try:
            return self._call("peers", wait=False)
        except ChildTunnelError:
            return []

    def set_demux(self, callback: Callable[[bytes, tuple], None] | None) -> None:
        """Non-WireGuard datagrams of the child's socket go to ``callback`` (on a reader thread)."""
        self._demux = callback
        self._call("set_demux", callback is not None)

    def send_datagram(self, data: bytes, address: tuple, ttl: int | None = None) -> None:
        """Send a non-WireGuard datagram from the child's socket; best effort, not waited for."""
        gen = self._gen
        if gen is None or gen.proc.poll() is not None:
            return
        try:
            _send(gen.sock, gen.send_lock, ("call", 0, "send_datagram", (data, tuple(address), ttl)))
        except OSError as exc:  # best effort, as the Tunnel's own
            log.debug("%s: send_datagram: %s", self.ifname, exc)

    def close(self) -> None:
        """Stop the child (it deletes its TUN and closes its socket), reap it; idempotent."""
        self._closing.set()
        gen = self._gen
        if gen is not None and gen.proc.poll() is None:
            with contextlib.suppress(Exception):
                self._call("stop", timeout=STOP_WAIT_S, wait=False)
            try:
                gen.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    gen.proc.kill()
        if self._monitor.is_alive() and self._monitor is not threading.current_thread():
            self._monitor.join(STOP_WAIT_S + 1)
        if gen is not None:
            gen.proc.wait()
            with contextlib.suppress(OSError):
                gen.sock.close()


# -- the child --------------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the thread that started it ends; exit if that already happened."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(1)


def _serve(sock: socket.socket) -> int:
    """Run the tunnel the first message describes and answer calls until told to stop or hung up on."""
    from agents.wireguard.runtime import Tunnel

    init = pickle.loads(sock.recv(MAX_MESSAGE))
    logging.basicConfig(level=init["log_level"] or logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s[tunnel %(process)d]: %(message)s")
    config = InterfaceConfig(private_key=init["private_key"], listen_port=init["listen_port"], mtu=init["mtu"],
                             addresses=init["addresses"], peers=init["peers"])
    lock = threading.Lock()
    tunnel = Tunnel(config, init["ifname"], **init["options"]).start()
    forward = lambda data, source: _send(sock, lock, ("demux", data, source))  # noqa: E731
    _send(sock, lock, ("hello", {"public_key": tunnel.public_key, "listen_port": tunnel.listen_port,
                                 "pid": os.getpid()}))
    sock.settimeout(1.0)
    try:
        while tunnel.running:
            try:
                data = sock.recv(MAX_MESSAGE)
            except TimeoutError:
                continue
            if not data:  # the parent is gone
                return 1
            _kind, call_id, method, args = pickle.loads(data)
            try:
                if method == "stop":
                    _send(sock, lock, ("ok", call_id, None))
                    return 0
                if method == "ip":
                    value = tunnel.tun.ip(*args[0])
                elif method == "set_demux":
                    value = tunnel.set_demux(forward if args[0] else None)
                elif method == "send_datagram":
                    data, address, ttl = args
                    value = tunnel.send_datagram(data, address, ttl=ttl)
                elif method in ("add_peer", "remove_peer", "set_allowed_ips", "peer_counters", "peers"):
                    value = getattr(tunnel, method)(*args)
                else:
                    raise LocalProtocolError(f"unknown call {method!r}")
                reply = ("ok", call_id, value)
            except Exception as exc:
                reply = ("error", call_id, exc if _picklable(exc) else ChildTunnelError(f"{type(exc).__name__}: {exc}"))
            if call_id:  # 0: not waited for (send_datagram)
                _send(sock, lock, reply)
        log.error("%s: the tunnel stopped (a thread failed)", tunnel.ifname)
        return 1
    finally:
        tunnel.close()


def _picklable(value) -> bool:
    try:
        pickle.loads(pickle.dumps(value))
        return True
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m agents.wireguard.child FD PARENT_PID``: serve one tunnel over the inherited socket FD."""
    fd, parent = (int(a) for a in (argv or sys.argv[1:]))
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's Ctrl-C is the parent's to handle
    sock = socket.socket(fileno=fd)
    try:
        return _serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
