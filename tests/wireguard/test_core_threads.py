"""The hot paths called from several threads at once, as the runtime's TUN and UDP threads do."""

import queue
import threading

from agents.wireguard.perf import ALICE_IP, BOB_IP, LoopbackPair, ip_packet

PACKETS = 3000


def test_encapsulate_and_decapsulate__concurrently__every_packet_arrives_once():
    pair = LoopbackPair()
    pair.handshake()
    now = pair.now
    wires = {"alice": queue.Queue(), "bob": queue.Queue()}
    received = {"alice": [], "bob": []}
    errors = []

    def sender(device, name, packet):
        try:
            for i in range(PACKETS):
                wires[name].put(device.encapsulate(packet + i.to_bytes(4, "big"), now))
                if i % 100 == 0:
                    device.tick(now)
            wires[name].put(None)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def receiver(device, name, source):
        try:
            while (item := wires[name].get(timeout=60)) is not None:
                inner = device.decapsulate(item[0], source, now)
                if inner is not None:
                    received[name].append(inner)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    base_ab = ip_packet(ALICE_IP, BOB_IP, b"a" * 200)
    base_ba = ip_packet(BOB_IP, ALICE_IP, b"b" * 200)
    # Fix the IPv4 length fields for the 4-byte sequence number appended below.
    base_ab = base_ab[:2] + (len(base_ab) + 4).to_bytes(2, "big") + base_ab[4:]
    base_ba = base_ba[:2] + (len(base_ba) + 4).to_bytes(2, "big") + base_ba[4:]
    threads = [
        threading.Thread(target=sender, args=(pair.alice, "bob", base_ab)),
        threading.Thread(target=receiver, args=(pair.bob, "bob", pair.alice_endpoint)),
        threading.Thread(target=sender, args=(pair.bob, "alice", base_ba)),
        threading.Thread(target=receiver, args=(pair.alice, "alice", pair.bob_endpoint)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert sorted(received["bob"]) == sorted(base_ab + i.to_bytes(4, "big") for i in range(PACKETS))
    assert len(received["alice"]) == PACKETS
    assert pair.alice.drop_counters == {} and pair.bob.drop_counters == {}
