"""`warren tunnel genkey/pubkey/show` output (no namespaces needed)."""

import io

from agents.cli import main
from agents.wireguard.backend import PeerStats
from agents.wireguard.cli import format_show
from agents.wireguard.config import decode_key, encode_key, public_key
from agents.wireguard.uapi import DeviceInfo

#: RFC 7748 section 6.1: Alice's X25519 key pair.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def test_genkey_then_pubkey(capsys, monkeypatch):
    assert main(["tunnel", "genkey"]) == 0
    private = decode_key(capsys.readouterr().out)
    monkeypatch.setattr("sys.stdin", io.StringIO(encode_key(private) + "\n"))
    assert main(["tunnel", "pubkey"]) == 0
    assert decode_key(capsys.readouterr().out) == public_key(private)


def test_pubkey__rfc7748_vector(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(encode_key(ALICE_PRIVATE)))
    assert main(["tunnel", "pubkey"]) == 0
    assert capsys.readouterr().out.strip() == encode_key(ALICE_PUBLIC)


def test_pubkey__garbage__exit_1(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("not a key"))
    assert main(["tunnel", "pubkey"]) == 1
    assert "not base64" in capsys.readouterr().err


def test_format_show__like_wg_show():
    peer = PeerStats(ALICE_PUBLIC, ("192.0.2.1", 51820), ("10.0.0.2/32", "fd00::2/128"),
                     last_handshake=1000.0, rx_bytes=3 * 1024 * 1024, tx_bytes=2048,
                     persistent_keepalive=25)
    text = format_show("wg0", DeviceInfo(ALICE_PRIVATE, 51820, [peer]), now=1000.0 + 3725)
    assert text == (
        "interface: wg0\n"
        f"  public key: {encode_key(ALICE_PUBLIC)}\n"
        "  private key: (hidden)\n"
        "  listening port: 51820\n"
        "\n"
        f"peer: {encode_key(ALICE_PUBLIC)}\n"
        "  endpoint: 192.0.2.1:51820\n"
        "  allowed ips: 10.0.0.2/32, fd00::2/128\n"
        "  latest handshake: 1 hour, 2 minutes, 5 seconds ago\n"
        "  transfer: 3.00 MiB received, 2.00 KiB sent\n"
        "  persistent keepalive: every 25 seconds\n"
    )


def test_show__no_socket__exit_1(capsys):
    assert main(["tunnel", "show", "warren-no-such-if"]) == 1
    assert "no UAPI socket" in capsys.readouterr().err
