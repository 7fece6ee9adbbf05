"""A hostile client and a hostile node for the attack tests, built from the real pieces.

Run as scripts inside lab namespaces (``python -m tests.e2e.rogue client|node ...``):

* ``client``: a client that owns its WireGuard tunnel (:class:`agents.wireguard.runtime.Tunnel`, no
  kill switch, routes only what it is told) and speaks the control protocol by hand
  (:mod:`agents.control` frames), so it can send what an honest client never would: forged,
  replayed, stale or foreign session requests, oversized or malformed frames, and no receipts at
  all. Its secrets (channel signer key, WireGuard key) come as JSON on stdin, never in argv; it then
  reads one JSON command per stdin line and answers one JSON line on stdout (see :class:`RogueClient`).
* ``node``: ``warren node run`` whose :class:`agents.node.agent.NodeAgent` is replaced by
  :class:`OverclaimingNodeAgent`, which invoices ``OVERCLAIM`` times the bytes it carried (and,
  when told to, quotes ``OVERCLAIM`` times its price at setup).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

from agents.control import (
    CONTROL_PORT,
    ControlKind,
    ControlReader,
    SessionRequest,
    SessionTerms,
    decode_ack,
    decode_invoice,
    decode_json,
    encode,
    encode_invoice,
    encode_json,
    sign_request,
)
from agents.chain import eip712
from agents.metering import ChannelTerms, ReceiptSigner, RemoteProtocolError, encode_receipt, price_of
from agents.node.agent import NodeAgent
from agents.node.session import quarantine_address
from agents.wireguard.config import InterfaceConfig, PeerConfig, decode_key, generate_private_key

__all__ = ["OVERCLAIM", "OVERQUOTE_FILE", "OverclaimingNodeAgent", "RogueClient", "main"]

#: The hostile node invoices this many times what it carried.
OVERCLAIM = 2
#: In the hostile node's data folder, this file makes it quote OVERCLAIM x its price at setup.
OVERQUOTE_FILE = "overquote"
#: Its path (set by the node's main from its config).
OVERQUOTE_FLAG = Path("/nonexistent") / OVERQUOTE_FILE
#: The node's control address inside the tunnel (first host of its default v6 pool).
NODE_CONTROL_V6 = "fd77:7272::1"
#: Bound on waiting for the node's answer to one control message (seconds).
ANSWER_S = 8.0


class OverclaimingNodeAgent(NodeAgent):
    """A node that invoices ``OVERCLAIM`` x its billed bytes (its own ledger still counts truly).

    While a file ``OVERQUOTE_FLAG`` is in its data folder it also quotes ``OVERCLAIM`` x its price in
    SESSION_ACCEPT (the test switches that on and off without a restart).
    """

    def _send(self, wg_key: bytes, data: bytes, conn: socket.socket | None = None) -> None:
        if data[:1] == bytes([ControlKind.INVOICE]) and len(data) == 3 + 16:
            billed, unbilled = decode_invoice(data[3:])
            data = encode_invoice(billed * OVERCLAIM, unbilled)
        if data[:1] == bytes([ControlKind.SESSION_ACCEPT]) and OVERQUOTE_FLAG.exists():
            terms = decode_json(next(iter(ControlReader().feed(data))))
            terms["price_per_gib"] = int(terms["price_per_gib"]) * OVERCLAIM
            data = encode_json(ControlKind.SESSION_ACCEPT, terms)
        super()._send(wg_key, data, conn)


class RogueClient:
    """One tunnel to one node, driven by JSON commands.

    Setup (first stdin line): ``node_key`` (base64 WireGuard key), ``node_id`` (hex), ``endpoint``
    ([host, port]), ``ifname``, ``chain_id``, ``channels``, and per channel (``channels_by_name``)
    ``channel_id``, ``client``, ``signer``, ``signer_key`` (hex), ``price_per_gib``.
    """

    def __init__(self, setup: dict) -> None:
        from agents.wireguard.runtime import Tunnel

        self.setup = setup
        self.node_key = decode_key(setup["node_key"])
        self.node_id = bytes.fromhex(setup["node_id"])
        self.tunnel = Tunnel(InterfaceConfig(private_key=generate_private_key(), listen_port=0, mtu=1420),
                             setup["ifname"], uapi=False, manage_routes=False).start()
        self.tunnel.add_peer(PeerConfig(public_key=self.node_key, allowed_ips=["0.0.0.0/0", "::/0"],
                                        endpoint=tuple(setup["endpoint"]), persistent_keepalive=1))
        self.key = self.tunnel.public_key
        self.quarantine = quarantine_address(self.key)
        tun = self.tunnel.tun
        tun.ip("addr", "add", f"{self.quarantine}/128", "dev", tun.name, "nodad")
        tun.ip("-6", "route", "replace", f"{NODE_CONTROL_V6}/128", "dev", tun.name, "src", self.quarantine)
        self.conn: socket.socket | None = None
        self.terms: SessionTerms | None = None
        self.signer: ReceiptSigner | None = None
        self.invoice = (0, 0)
        self.acks: list[int] = []
        self.refused: list[str] = []
        self.requests: list[dict] = []
        self._lock = threading.Lock()

    # -- control -----------------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + ANSWER_S * 2
        while True:
            conn = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            conn.settimeout(1.0)
            try:
                conn.bind((self.quarantine, 0))
                conn.connect((NODE_CONTROL_V6, CONTROL_PORT))
                return conn
            except OSError:
                conn.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def request(self, cmd: dict) -> dict:
        """Send one session request (or raw bytes) on a fresh control connection; report the answer."""
        if self.conn is not None and not cmd.get("same_connection"):
            self.conn.close()
            self.conn = None
        conn = self.conn or self._connect()
        if "raw_hex" in cmd:
            conn.sendall(bytes.fromhex(cmd["raw_hex"]))
        else:
            conn.sendall(encode_json(ControlKind.SESSION_REQUEST, self._request_body(cmd)))
        reader = ControlReader()
        conn.settimeout(ANSWER_S)
        deadline = time.monotonic() + ANSWER_S
        try:
            while time.monotonic() < deadline:
                data = conn.recv(65536)
                if not data:
                    conn.close()
                    return {"answer": "closed"}
                for frame in reader.feed(data):
                    if frame.kind is ControlKind.SESSION_REFUSED:
                        conn.close()
                        return {"answer": "refused", **decode_json(frame)}
                    if frame.kind is ControlKind.SESSION_ACCEPT:
                        self._accepted(conn, SessionTerms.from_wire(decode_json(frame)), cmd)
                        return {"answer": "accepted", "terms": self.terms.to_wire()}
        except TimeoutError:
            conn.close()
            return {"answer": "timeout"}
        except (OSError, RemoteProtocolError) as exc:
            conn.close()
            return {"answer": "closed", "error": str(exc)}
        return {"answer": "timeout"}

    def _request_body(self, cmd: dict) -> dict:
        channel = self.setup["channels"][cmd.get("channel", "main")]
        if "replay" in cmd:
            return self.requests[cmd["replay"]]
        timestamp = int(time.time()) + int(cmd.get("time_offset", 0))
        node_id = bytes.fromhex(cmd["node_id"]) if "node_id" in cmd else self.node_id
        request = SessionRequest(bytes.fromhex(channel["channel_id"]), node_id,
                                 base64.b64decode(cmd["wg_key"]) if "wg_key" in cmd else self.key,
                                 timestamp, os.urandom(32))
        key = os.urandom(32) if cmd.get("forge") else bytes.fromhex(channel["signer_key"])
        signature = sign_request(request, key, self.setup["chain_id"], _domain(self.setup, channel))
        if "pool" in channel:  # a voucher-pool channel: named by its pool and terms
            body = request.to_wire(signature, signer=channel["signer"], pool=channel["pool"],
                                   voucher_deposit=channel["deposit"])
        else:
            body = request.to_wire(signature, client=channel["client"], signer=channel["signer"])
        if "redemption" in cmd:  # the voucher redemption the node is asked to submit first
            body["redemption"] = cmd["redemption"]
        self.requests.append(body)
        return body

    def _accepted(self, conn: socket.socket, terms: SessionTerms, cmd: dict) -> None:
        self.conn, self.terms = conn, terms
        channel = self.setup["channels"][cmd.get("channel", "main")]
        self.signer = ReceiptSigner(ChannelTerms(
            channel_id=bytes.fromhex(channel["channel_id"]), signer=channel["signer"], deposit=channel["deposit"],
            price_per_gib=terms.price_per_gib, credit_bytes=terms.credit_bytes, chain_id=self.setup["chain_id"],
            verifying_contract=_domain(self.setup, channel)), bytes.fromhex(channel["signer_key"]))
        tun = self.tunnel.tun
        tun.ip("addr", "add", f"{terms.address_v4}/32", "dev", tun.name)
        for target in [*terms.dns[:1], *cmd.get("routes", [])]:
            if ":" not in target:
                tun.ip("route", "replace", f"{target}/32", "dev", tun.name, "src", terms.address_v4)
        conn.settimeout(None)
        threading.Thread(target=self._read_loop, args=(conn,), daemon=True).start()

    def _read_loop(self, conn: socket.socket) -> None:
        reader = ControlReader()
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            for frame in reader.feed(data):
                with self._lock:
                    if frame.kind is ControlKind.INVOICE:
                        self.invoice = decode_invoice(frame.body)
                    elif frame.kind is ControlKind.ACK:
                        self.acks.append(decode_ack(frame.body)[0])
                    elif frame.kind is ControlKind.REFUSED:
                        self.refused.append(frame.body.decode(errors="replace"))
                    elif frame.kind is ControlKind.CLOSE_SIGNATURE:
                        self.close_signature = frame.body

    def pay(self, cmd: dict) -> dict:
        """Sign one receipt for the session's whole invoice (plus ``extra`` bytes); wait for its ACK."""
        with self._lock:
            billed = self.invoice[0]
        cumulative = self.terms.paid_bytes + billed + int(cmd.get("extra", 0))
        if cmd.get("wrong_key"):  # the channel's domain and terms, signed by a key that is not its signer
            terms = self.signer.terms
            receipt = eip712.Receipt(terms.channel_id, cumulative, price_of(cumulative, terms.price_per_gib))
            signature = eip712.sign(receipt, os.urandom(32), terms.chain_id, terms.verifying_contract)
        else:
            receipt, signature = self.signer.sign(cumulative)
        kind = ControlKind.CLOSE_REQUEST if cmd.get("close") else ControlKind.RECEIPT
        self.close_signature = None
        self.conn.sendall(encode(kind, encode_receipt(receipt, signature)))
        deadline = time.monotonic() + ANSWER_S
        while time.monotonic() < deadline:
            with self._lock:
                if kind is ControlKind.RECEIPT and cumulative in self.acks:
                    break
                if kind is ControlKind.CLOSE_REQUEST and self.close_signature is not None:
                    break
            time.sleep(0.05)
        return {"cumulative_bytes": cumulative, "cumulative_amount": receipt.cumulative_amount,
                "signature": signature.hex(), "acked": cumulative in self.acks, "refused": self.refused,
                "close_signature": (self.close_signature or b"").hex()}

    # -- traffic -----------------------------------------------------------------------------------

    def resolve(self, cmd: dict) -> dict:
        """Ask the node's in-tunnel resolver for a name: the rcode and addresses."""
        from dnslib import QTYPE, RCODE, DNSRecord

        query = DNSRecord.question(cmd["name"], "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((self.terms.address_v4, 0))
            sock.settimeout(3.0)
            sock.sendto(query.pack(), (self.terms.dns[0], 53))
            reply = DNSRecord.parse(sock.recvfrom(4096)[0])
        return {"rcode": RCODE.get(reply.header.rcode),
                "addresses": [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]}

    def download(self, cmd: dict) -> dict:
        """GET a file from ``host`` through the tunnel; stop at the end, or after ``stall_s`` of silence."""
        got, stalled = 0, False
        t0 = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((self.terms.address_v4, 0))
            sock.settimeout(float(cmd.get("stall_s", 3.0)))
            try:
                sock.connect((cmd["host"], int(cmd.get("port", 80))))
                sock.sendall(f"GET /{cmd['path']} HTTP/1.0\r\nHost: {cmd.get('name', cmd['host'])}\r\n\r\n".encode())
                while True:
                    data = sock.recv(1 << 16)
                    if not data:
                        break
                    got += len(data)
            except (TimeoutError, OSError):
                stalled = True
        with self._lock:
            invoice = self.invoice
        return {"bytes": got, "stalled": stalled, "seconds": round(time.monotonic() - t0, 2),
                "invoice": invoice}

    def state(self, cmd: dict) -> dict:
        """What the node told this client so far."""
        with self._lock:
            return {"invoice": self.invoice, "acks": self.acks[-3:], "refused": self.refused}


def _domain(setup: dict, channel: dict) -> str:
    """The EIP-712 verifying contract of a channel: its voucher pool, or payment_channels."""
    return channel.get("pool") or setup["channels_address"]


def _client_main() -> int:
    setup = json.loads(sys.stdin.readline())
    rogue = RogueClient(setup)
    print(json.dumps({"ready": True, "key": base64.b64encode(rogue.key).decode()}), flush=True)
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd.pop("op")
            if op == "quit":
                break
            try:
                answer = getattr(rogue, op)(cmd)
            except Exception as exc:  # reported to the test, which asserts on it
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
    finally:
        rogue.tunnel.close()
    return 0


def _node_main(config_path: str) -> int:
    from agents.node import service
    from agents.node.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    global OVERQUOTE_FLAG
    config = load_config(config_path)
    OVERQUOTE_FLAG = Path(config.data_dir) / OVERQUOTE_FILE
    service.NodeAgent = OverclaimingNodeAgent
    return service.run_node(config)


def main(argv: list[str] | None = None) -> int:
    """``client`` (setup and commands on stdin) or ``node --config PATH``."""
    parser = argparse.ArgumentParser(prog="rogue")
    parser.add_argument("role", choices=["client", "node"])
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    if args.role == "client":
        return _client_main()
    return _node_main(args.config)


if __name__ == "__main__":
    sys.exit(main())
