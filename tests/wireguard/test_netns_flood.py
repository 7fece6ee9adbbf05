"""A handshake flood against a running `warren tunnel up`: its established peer keeps flowing.

agents.netlab.flood.run_flood: four hosts on one bridge, the node (our tunnel, as its own process),
its established peer (wireguard-go) pinging through the tunnel, a flooder sending valid-MAC1
initiations from strangers as fast as one process can, and a newcomer (wireguard-go, a configured
peer of the node) that starts during the flood and must get in by answering the cookie.
"""

from __future__ import annotations

from agents.netlab import Lab
from agents.netlab.flood import run_flood


def test_handshake_flood__peer_keeps_its_pings__flooder_gets_only_cookies__newcomer_gets_in(root, tmp_path):
    with Lab() as lab:
        result = run_flood(lab, tmp_path, responder="py")
    print(result)
    assert result["initiations_per_s"] > 5_000  # a real flood (the node is under load), not a trickle
    assert result["pings_received"] >= 0.95 * result["pings"], result
    # Nothing but cookie replies (type 3, 64 bytes) ever goes back to the flooder.
    assert set(result["flooder_replies"]) <= {"3"} and set(result["flooder_reply_sizes"]) <= {64}, result
    assert result["newcomer_joined_after_s"] is not None, "the newcomer did not get in during the flood"
    assert result["responder_alive"]
