"""The protocol's timers, driven by a fake clock: rekey, reject, keepalives, retransmission."""

from agents.wireguard import HandshakeCompleted, HandshakeFailed, SessionExpired, core
from agents.wireguard.messages import INITIATION_SIZE, TRANSPORT_MIN_SIZE
from agents.wireguard.perf import ALICE_IP, BOB_IP, LoopbackPair, ip_packet
from agents.wireguard.timers import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    ZERO_KEYS_AFTER,
)

TO_BOB = ip_packet(ALICE_IP, BOB_IP, b"to bob")
TO_ALICE = ip_packet(BOB_IP, ALICE_IP, b"to alice")


def kinds(outbox):
    return [len(datagram) for datagram, _ in outbox]


def receiver_index(datagram):
    return int.from_bytes(datagram[4:8], "little")


def test_rekey__after_rekey_after_time__initiator_starts_new_handshake_and_switches(pair):
    first, _ = pair.alice.encapsulate(TO_BOB, pair.now)
    pair.now += REKEY_AFTER_TIME
    datagram, endpoint = pair.alice.encapsulate(TO_BOB, pair.now)  # the old session still carries it
    outbox = pair.alice.drain_outbox()
    assert kinds(outbox) == [INITIATION_SIZE]
    pair.carry(pair.alice, *outbox[0])
    pair.deliver()
    assert [type(e) for e in pair.alice.drain_events()] == [HandshakeCompleted]
    assert pair.carry(pair.alice, datagram, endpoint) == TO_BOB  # the previous session still decrypts
    later, _ = pair.alice.encapsulate(TO_BOB, pair.now)
    assert receiver_index(later) != receiver_index(first)
    assert pair.carry(pair.alice, later, pair.bob_endpoint) == TO_BOB


def test_rekey__responder_never_initiates_on_send(pair):
    pair.now += REKEY_AFTER_TIME + 1
    assert pair.bob.encapsulate(TO_ALICE, pair.now) is not None
    assert pair.bob.drain_outbox() == []


def test_rekey__initiator_receiving_on_old_session__rekeys_once(pair):
    pair.now += REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
    pair.carry(pair.bob, *pair.bob.encapsulate(TO_ALICE, pair.now))
    assert kinds(pair.alice.drain_outbox()) == [INITIATION_SIZE]
    pair.now += REKEY_TIMEOUT
    pair.carry(pair.bob, *pair.bob.encapsulate(TO_ALICE, pair.now))
    assert pair.alice.drain_outbox() == []


def test_rekey__after_rekey_after_messages(pair, monkeypatch):
    monkeypatch.setattr(core, "REKEY_AFTER_MESSAGES", 5)
    pair.now += REKEY_TIMEOUT  # past the once-per-REKEY_TIMEOUT initiation limit
    for _ in range(3):
        assert pair.alice.encapsulate(TO_BOB, pair.now) is not None
    assert pair.alice.drain_outbox() == []
    # The handshake's keepalive used counter 0, so this is the 5th message: rekey.
    assert pair.alice.encapsulate(TO_BOB, pair.now) is not None
    assert kinds(pair.alice.drain_outbox()) == [INITIATION_SIZE]


def test_rekey__after_rekey_after_messages__responder_rekeys_too(pair, monkeypatch):
    """Only the time-based rekey is the initiator's (wireguard-go keepKeyFreshSending)."""
    monkeypatch.setattr(core, "REKEY_AFTER_MESSAGES", 3)
    for _ in range(2):
        assert pair.bob.encapsulate(TO_ALICE, pair.now) is not None
    assert pair.bob.drain_outbox() == []
    assert pair.bob.encapsulate(TO_ALICE, pair.now) is not None
    assert kinds(pair.bob.drain_outbox()) == [INITIATION_SIZE]


def test_rekey__responder_keeps_old_session_until_initiator_uses_the_new_one(pair):
    """Key confirmation (paper 5.4.3): Bob may not send on the new session before Alice's first data on it."""
    old_session = receiver_index(pair.bob.encapsulate(TO_ALICE, pair.now)[0])
    pair.now += REKEY_TIMEOUT
    pair.alice.initiate_handshake(pair.bob.public_key, pair.now)
    pair.carry(pair.alice, *pair.alice.drain_outbox()[0])
    ((response, to_alice),) = pair.bob.drain_outbox()
    assert receiver_index(pair.bob.encapsulate(TO_ALICE, pair.now)[0]) == old_session
    pair.carry(pair.bob, response, to_alice)  # Alice switches and confirms with a keepalive
    pair.deliver()
    new_session = receiver_index(pair.bob.encapsulate(TO_ALICE, pair.now)[0])
    assert new_session != old_session
    assert pair.carry(pair.bob, *pair.bob.encapsulate(TO_ALICE, pair.now)) == TO_ALICE


def test_reject__after_reject_after_messages__stops_sending(pair, monkeypatch):
    monkeypatch.setattr(core, "REJECT_AFTER_MESSAGES", 4)
    sent = [pair.alice.encapsulate(TO_BOB, pair.now) for _ in range(4)]
    assert [s is not None for s in sent] == [True, True, True, False]


def test_reject__after_reject_after_time__stops_sending_and_receiving(pair):
    old, endpoint = pair.alice.encapsulate(TO_BOB, pair.now)
    pair.now += REJECT_AFTER_TIME
    pair.tick()
    assert any(isinstance(e, SessionExpired) for e in pair.alice.drain_events())
    assert pair.alice.encapsulate(TO_BOB, pair.now) is None  # queued, handshake started instead
    assert INITIATION_SIZE in kinds(pair.alice.drain_outbox())
    assert pair.carry(pair.alice, old, endpoint) is None
    assert pair.bob.drop_counters == {"expired_session": 1}


def test_keepalive__after_keepalive_timeout_of_silence__sent_once(pair):
    pair.carry(pair.alice, *pair.alice.encapsulate(TO_BOB, pair.now))
    pair.now += KEEPALIVE_TIMEOUT - 0.1
    pair.tick()
    assert pair.bob.drain_outbox() == []
    pair.now += 0.1
    pair.tick()
    outbox = pair.bob.drain_outbox()
    assert kinds(outbox) == [TRANSPORT_MIN_SIZE]
    assert pair.carry(pair.bob, *outbox[0]) is None and pair.alice.drop_counters == {}
    pair.now += KEEPALIVE_TIMEOUT
    pair.tick()
    assert pair.bob.drain_outbox() == []


def test_keepalive__not_sent_when_data_went_back(pair):
    pair.carry(pair.alice, *pair.alice.encapsulate(TO_BOB, pair.now))
    pair.carry(pair.bob, *pair.bob.encapsulate(TO_ALICE, pair.now + 1))
    pair.now += KEEPALIVE_TIMEOUT
    pair.bob.tick(pair.now)
    assert pair.bob.drain_outbox() == []


def test_new_handshake__data_sent_but_nothing_heard__after_keepalive_plus_rekey_timeout(pair):
    pair.alice.encapsulate(TO_BOB, pair.now)  # lost
    pair.now += KEEPALIVE_TIMEOUT + REKEY_TIMEOUT - 0.1
    pair.alice.tick(pair.now)
    assert pair.alice.drain_outbox() == []
    pair.now += 0.1 + REKEY_TIMEOUT_JITTER_MAX
    pair.alice.tick(pair.now)
    assert kinds(pair.alice.drain_outbox()) == [INITIATION_SIZE]


def test_new_handshake__deadline_carries_jitter():
    """wireguard-go timersDataSent adds up to REKEY_TIMEOUT_JITTER_MAX, as for retransmissions."""
    delays = []
    for _ in range(8):
        pair = LoopbackPair()
        pair.handshake()
        pair.now += 1
        pair.alice.encapsulate(TO_BOB, pair.now)
        delays.append(pair.alice.next_deadline() - pair.now)
    base = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
    assert all(base <= d <= base + REKEY_TIMEOUT_JITTER_MAX for d in delays)
    assert len(set(delays)) > 1


def test_persistent_keepalive__first_tick_handshakes_then_every_interval():
    pair = LoopbackPair()
    pair.alice.add_peer(pair.bob.public_key, allowed_ips=[BOB_IP + "/32"], endpoint=pair.bob_endpoint,
                        persistent_keepalive=25)
    assert pair.alice.next_deadline() < pair.now
    pair.tick()
    assert kinds(pair.alice.drain_outbox()) == [INITIATION_SIZE]
    pair.alice.initiate_handshake(pair.bob.public_key, pair.now + REKEY_TIMEOUT)
    pair.now += REKEY_TIMEOUT
    pair.deliver()
    assert pair.bob.peers()[0].endpoint == pair.alice_endpoint
    sent = []
    for _ in range(100):  # 100 s of silence, one tick a second
        pair.now += 1
        pair.tick()
        sent += [(pair.now, len(d)) for d, _ in pair.alice.drain_outbox()]
        pair.bob.drain_outbox()
    keepalives = [t for t, size in sent if size == TRANSPORT_MIN_SIZE]
    assert len(keepalives) == 4 and all(b - a == 25 for a, b in zip(keepalives, keepalives[1:]))


def test_retransmit__unanswered_initiation__retried_until_rekey_attempt_time_then_fails():
    pair = LoopbackPair()
    start = pair.now
    pair.alice.encapsulate(TO_BOB, pair.now)
    sent = kinds(pair.alice.drain_outbox())
    failed = []
    for _ in range(100):  # jump from deadline to deadline
        pair.now = pair.alice.next_deadline()
        pair.alice.tick(pair.now)
        sent += kinds(pair.alice.drain_outbox())
        failed += [e for e in pair.alice.drain_events() if isinstance(e, HandshakeFailed)]
        if failed:
            break
    (failure,) = failed
    # As wireguard-go and Linux ("did not complete after MAX_TIMER_HANDSHAKES + 2 attempts"): the
    # first initiation, then retries while the attempt count is at most MAX_TIMER_HANDSHAKES.
    assert sent == [INITIATION_SIZE] * (MAX_TIMER_HANDSHAKES + 2)
    attempts = MAX_TIMER_HANDSHAKES + 2
    assert attempts * REKEY_TIMEOUT <= failure.time - start <= attempts * (REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX)
    assert failure.time - start > REKEY_ATTEMPT_TIME
    # The queued packet was dropped: a later handshake delivers nothing stale.
    pair.handshake()
    assert pair.bob_received == []


def test_retransmit__answer_after_giving_up__still_completes_the_handshake():
    """As wireguard-go: giving up drops the queue, but the last initiation stays answerable."""
    pair = LoopbackPair()
    pair.alice.initiate_handshake(pair.bob.public_key, pair.now)
    last = pair.alice.drain_outbox()[-1]
    for _ in range(100):  # jump from deadline to deadline until Alice gives up
        pair.now = pair.alice.next_deadline()
        pair.alice.tick(pair.now)
        last = (pair.alice.drain_outbox() or [last])[-1]
        if any(isinstance(e, HandshakeFailed) for e in pair.alice.drain_events()):
            break
    pair.carry(pair.alice, *last)
    pair.deliver()
    assert [type(e) for e in pair.alice.drain_events()] == [HandshakeCompleted]


def test_retransmit__spacing_is_rekey_timeout_plus_jitter():
    pair = LoopbackPair()
    pair.alice.initiate_handshake(pair.bob.public_key, pair.now)
    pair.alice.drain_outbox()
    deadline = pair.alice.next_deadline()
    assert REKEY_TIMEOUT <= deadline - pair.now <= REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX


def test_zero_keys__after_three_reject_after_times__sessions_forgotten(pair):
    old, endpoint = pair.alice.encapsulate(TO_BOB, pair.now)
    pair.now += ZERO_KEYS_AFTER
    pair.bob.tick(pair.now)
    assert pair.carry(pair.alice, old, endpoint) is None
    assert pair.bob.drop_counters == {"unknown_receiver": 1}


def test_next_deadline__none_when_idle_and_tick_is_idempotent():
    pair = LoopbackPair()
    assert pair.alice.next_deadline() is None
    pair.handshake()
    deadline = pair.bob.next_deadline()
    assert deadline is not None and deadline > pair.now
    pair.tick()
    pair.tick()
    assert pair.alice.drain_outbox() == [] and pair.bob.drain_outbox() == []
    assert not [e for e in pair.alice.drain_events() if not isinstance(e, HandshakeCompleted)]


def test_persistent_keepalive__reconfiguring_the_peer__no_extra_keepalive(pair):
    """wireguard-go sends the immediate keepalive only when the interval goes from off to on."""
    add = dict(allowed_ips=[BOB_IP + "/32"], endpoint=pair.bob_endpoint, persistent_keepalive=25)
    pair.alice.add_peer(pair.bob.public_key, **add)
    pair.tick()
    assert kinds(pair.alice.drain_outbox()) == [TRANSPORT_MIN_SIZE]
    pair.alice.add_peer(pair.bob.public_key, **add)  # e.g. `wg set ... endpoint ...` with the same interval
    pair.tick()
    assert pair.alice.drain_outbox() == []


def test_persistent_keepalive__peer_without_endpoint__silent_until_it_speaks():
    pair = LoopbackPair()
    pair.bob.add_peer(pair.alice.public_key, allowed_ips=[ALICE_IP + "/32"], persistent_keepalive=1)
    for _ in range(5):
        pair.now += 1
        pair.bob.tick(pair.now)
    assert pair.bob.drain_outbox() == []
    pair.handshake()
    pair.now += 1
    pair.bob.tick(pair.now)
    assert kinds(pair.bob.drain_outbox()) == [TRANSPORT_MIN_SIZE]  # one keepalive, no stale backlog
