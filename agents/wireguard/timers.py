"""WireGuard's timer constants and the per-peer timer state machine.

Constants are the paper's (section 6.1, "Preliminaries" table) and wireguard-go's (constants.go).
`PeerTimers` holds the five per-peer deadlines of wireguard-go's timers.go as plain floats (monotonic
seconds, or None when not armed) and the rules that arm and disarm them on each protocol event; the
device runs the expired ones from `tick`. Nothing here reads a clock.
"""

from typing import Callable

__all__ = [
    "REKEY_AFTER_MESSAGES",
    "REJECT_AFTER_MESSAGES",
    "REKEY_AFTER_TIME",
    "REJECT_AFTER_TIME",
    "REKEY_ATTEMPT_TIME",
    "REKEY_TIMEOUT",
    "REKEY_TIMEOUT_JITTER_MAX",
    "KEEPALIVE_TIMEOUT",
    "MAX_TIMER_HANDSHAKES",
    "INITIATIONS_PER_SECOND",
    "MIN_INITIATION_INTERVAL",
    "ZERO_KEYS_AFTER",
    "MAX_STAGED_PACKETS",
    "PeerTimers",
]

#: Paper 6.1: initiate a new handshake after this many messages on one session.
REKEY_AFTER_MESSAGES = 2**60
#: Paper 6.1: never send or accept a counter at or past this (2**64 - 2**13 - 1).
REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1
#: Paper 6.1: the initiator rekeys a session this old on its next send (seconds).
REKEY_AFTER_TIME = 120.0
#: Paper 6.1: a session this old is no longer used to send or receive (seconds).
REJECT_AFTER_TIME = 180.0
#: Paper 6.1: give up retrying a handshake after this long (seconds).
REKEY_ATTEMPT_TIME = 90.0
#: Paper 6.1: retransmit an unanswered initiation after this long (seconds), plus jitter.
REKEY_TIMEOUT = 5.0
#: Paper 6.1 / wireguard-go: retransmissions add up to a third of a second of random jitter.
REKEY_TIMEOUT_JITTER_MAX = 1.0 / 3.0
#: Paper 6.1: send a keepalive if we received data and sent nothing for this long (seconds).
KEEPALIVE_TIMEOUT = 10.0
#: wireguard-go constants.go: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT. A handshake gives up when its
#: retransmission timer fires with more attempts than this: MAX_TIMER_HANDSHAKES + 2 initiations in all
#: (wireguard-go timers.go and Linux timers.c: "did not complete after %d attempts", MAX + 2).
MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)
#: wireguard-go / Linux messages.h: a responder consumes at most 50 initiations per second per peer.
INITIATIONS_PER_SECOND = 50
MIN_INITIATION_INTERVAL = 1.0 / INITIATIONS_PER_SECOND
#: Paper 6.3: erase all key material after three times REJECT_AFTER_TIME without a new session.
ZERO_KEYS_AFTER = REJECT_AFTER_TIME * 3
#: Linux MAX_QUEUED_PACKETS: packets held per peer while waiting for a handshake.
MAX_STAGED_PACKETS = 1024


class PeerTimers:
    """The five timers of one peer (wireguard-go timers.go), as deadlines.

    Attributes:
        retransmit_handshake: resend our initiation (REKEY_TIMEOUT + jitter after sending one).
        send_keepalive: answer received data with a keepalive if we send nothing (KEEPALIVE_TIMEOUT).
        new_handshake: we sent data but heard nothing back: start a new handshake
            (KEEPALIVE_TIMEOUT + REKEY_TIMEOUT, plus jitter).
        zero_key_material: erase keys (3 x REJECT_AFTER_TIME after the last session was derived).
        persistent_keepalive: the configured persistent keepalive.
        handshake_attempts: retransmissions so far of the current handshake.
        need_another_keepalive: data arrived while a keepalive was already pending.
    """

    __slots__ = ("retransmit_handshake", "send_keepalive", "new_handshake", "zero_key_material",
                 "persistent_keepalive", "handshake_attempts", "need_another_keepalive", "_jitter")

    def __init__(self, jitter: Callable[[], float]) -> None:
        self.retransmit_handshake: float | None = None
        self.send_keepalive: float | None = None
        self.new_handshake: float | None = None
        self.zero_key_material: float | None = None
        self.persistent_keepalive: float | None = None
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self._jitter = jitter

    def next_deadline(self) -> float | None:
        """The earliest armed deadline, or None."""
        best = None
        for deadline in (self.retransmit_handshake, self.send_keepalive, self.new_handshake,
                         self.zero_key_material, self.persistent_keepalive):
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def clear(self) -> None:
        """Disarm everything (peer removed)."""
        self.retransmit_handshake = self.send_keepalive = self.new_handshake = None
        self.zero_key_material = self.persistent_keepalive = None

    # Event hooks, named after wireguard-go's timersXxx functions.

    def data_sent(self, now: float) -> None:
        """We sent a transport data packet: expect an answer within KEEPALIVE + REKEY_TIMEOUT + jitter.

        The jitter is wireguard-go's and Linux's (timersDataSent, wg_timers_data_sent): peers that
        stopped hearing each other at the same moment do not both initiate at the same instant.
        """
        if self.new_handshake is None:
            self.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()

    def data_received(self, now: float) -> None:
        """We received transport data: owe a keepalive unless we send something first."""
        if self.send_keepalive is None:
            self.send_keepalive = now + KEEPALIVE_TIMEOUT
        else:
            self.need_another_keepalive = True

    def any_authenticated_sent(self) -> None:
        """Anything authenticated went out: the pending keepalive is no longer owed."""
        self.send_keepalive = None

    def any_authenticated_received(self) -> None:
        """Anything authenticated came in: the peer is alive, no new handshake needed."""
        self.new_handshake = None

    def traversal(self, now: float, persistent_interval: int | None) -> None:
        """Any authenticated packet in or out: push the persistent keepalive back."""
        if persistent_interval:
            self.persistent_keepalive = now + persistent_interval

    def handshake_initiated(self, now: float) -> None:
        """We sent an initiation: retransmit after REKEY_TIMEOUT plus jitter if unanswered."""
        self.retransmit_handshake = now + REKEY_TIMEOUT + self._jitter()

    def handshake_complete(self) -> None:
        """A handshake completed: stop retransmitting."""
        self.retransmit_handshake = None
        self.handshake_attempts = 0

    def session_derived(self, now: float) -> None:
        """New keys exist: erase everything if no newer session follows within 3 x REJECT_AFTER_TIME."""
        self.zero_key_material = now + ZERO_KEYS_AFTER
