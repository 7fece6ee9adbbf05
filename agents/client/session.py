"""The client's session core: when to pay, how much, and whether the node is still there (sans-I/O).

The client pays by cumulative receipts (agents.metering.ReceiptSigner) every ``receipt_bytes`` of
its own counter's growth or every ``receipt_interval_s``, whichever comes first (the node's terms).

How much: ``min(max(own - unbilled, invoice), own - unbilled + credit, invoice + credit)``. Invoices carry the
node's billed count and the bytes it carried but does not bill (traffic its exit policy dropped).

* ``own - unbilled``: what the client's own counter saw, less what the node does not charge. An
  invoice is always a little stale (it crossed the tunnel behind the traffic it counts), so paying
  the bill alone would fall behind by the invoice's delay on every receipt.
* ``invoice``: the node counts bytes when it sends them, the client when they arrive; what is in
  flight (socket buffers, queues: megabytes at tens of Mbit/s) is billed before the client sees it.
  Paying the bill covers that.
* ``own - unbilled + credit``: the cap. A node that inflates its bill gains at most the agreed
  credit, once, and the claim beyond the cap is recorded as a dispute
  (:attr:`ClientMeter.overclaim_bytes`), shown in status and the log; the client never signs more.
  The unbilled bytes come off the cap too: the node checks a receipt against its own billed count
  (which excludes them) and refuses one more than the credit beyond it ("beyond_counter"), so a cap
  of ``own + credit`` was refused as soon as the exit had dropped anything (seen in CI: every
  receipt refused, the session closed unilaterally). A node lying about its drops only lowers its pay.
* ``invoice + credit``: paying ahead of the bill stops at the credit. The node reports what its
  policy dropped only in its next invoice, so traffic the node will not bill (a burst at a blocked
  address) is paid for meanwhile; cumulative receipts cannot be taken back, so without this bound a
  fast burst would stay paid. Measured: a 4 MiB UDP burst at a blocked address was paid 2.1 MB before
  the node's invoice said it was dropped (tests/e2e/test_exit_attacks_e2e.py).

Liveness: the node sends an invoice at least every receipt interval; the runtime also sees the
tunnel's receive counter. :class:`Liveness` says a node is dead when nothing arrived for
``dead_after_s``, or its measured latency stays above ``max_latency_s``: :class:`LatencyProbe`
measures it as the round trip of PING/PONG frames on the control channel (inside the tunnel, so it
includes queueing behind the user's own traffic: the default threshold is generous).
"""

from __future__ import annotations

import dataclasses

from agents.chain.eip712 import Receipt
from agents.control import SessionTerms
from agents.metering import LocalProtocolError, ReceiptSigner

__all__ = ["ClientMeter", "LatencyProbe", "Liveness"]


class ClientMeter:
    """Decides when and what to sign for one session.

    Args:
        signer: the channel's receipt signer (its ``latest`` is the last receipt signed).
        terms: the node's terms from SESSION_ACCEPT.
        now: when the session started.
    """

    def __init__(self, signer: ReceiptSigner, terms: SessionTerms, now: float) -> None:
        self.signer = signer
        self.terms = terms
        #: The channel's paid bytes when this session began (the node's figure, checked below).
        self.base_bytes = terms.paid_bytes
        if signer.latest is not None and signer.latest.cumulative_bytes > terms.paid_bytes:
            # We signed more than the node says it holds (a receipt lost on the way): our own record
            # is what a settlement could show, so count from it.
            self.base_bytes = signer.latest.cumulative_bytes
        self.own_bytes = 0
        self.invoice: int | None = None
        self.unbilled = 0
        self.acked_bytes = terms.paid_bytes
        self.overclaim_bytes = 0
        self.refusals: dict[str, int] = {}
        self._last_paid_at = now
        self._last_paid_own = 0
        #: The last (receipt, signature) signed in this session (what a close would present).
        self.last_signed: tuple | None = None

    def on_invoice(self, billed_bytes: int, unbilled_bytes: int = 0) -> None:
        """The node's billed and unbilled counts for this session."""
        self.invoice = max(self.invoice or 0, billed_bytes)
        self.unbilled = max(self.unbilled, unbilled_bytes)
        cap = self._ours() + self.terms.credit_bytes
        if self.invoice > cap:
            self.overclaim_bytes = max(self.overclaim_bytes, self.invoice - cap)

    def on_ack(self, cumulative_bytes: int) -> None:
        """The node stored a receipt."""
        self.acked_bytes = max(self.acked_bytes, cumulative_bytes)

    def on_refused(self, reason: str) -> None:
        """The node refused a receipt."""
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def due(self, own_bytes: int, now: float) -> bool:
        """Whether a receipt is due for the client's own session counter ``own_bytes``."""
        self.own_bytes = max(self.own_bytes, own_bytes)
        grown = self.own_bytes - self._last_paid_own
        # The node's bill nearing its credit limit (it counts what is still in flight to us) makes a
        # receipt due at once: waiting for our own counter could get us cut off.
        behind = (self.invoice or 0) - (self.acked_bytes - self.base_bytes) > self.terms.credit_bytes // 2
        return grown > 0 and (grown >= self.terms.receipt_bytes or behind
                              or now - self._last_paid_at >= self.terms.receipt_interval_s)

    def amount_to_pay(self) -> int:
        """Session bytes to pay for now (see the module docstring)."""
        ours = self._ours()
        invoice, credit = self.invoice or 0, self.terms.credit_bytes
        return min(max(ours, invoice), ours + credit, invoice + credit)

    def _ours(self) -> int:
        """Our own count less what the node says it does not bill."""
        return max(0, self.own_bytes - self.unbilled)

    def next_receipt(self, own_bytes: int, now: float) -> tuple[Receipt, bytes] | None:
        """A signed receipt if one is due and would pay for something new, else None.

        Raises:
            LocalProtocolError: the deposit cannot cover what is owed (top up or move on).
        """
        if not self.due(own_bytes, now):
            return None
        cumulative = self.base_bytes + self.amount_to_pay()
        latest = self.signer.latest
        if latest is not None and cumulative <= latest.cumulative_bytes:
            self._last_paid_at, self._last_paid_own = now, self.own_bytes
            return None
        receipt, signature = self.signer.sign(cumulative)
        self._last_paid_at, self._last_paid_own = now, self.own_bytes
        self.last_signed = (receipt, signature)
        return receipt, signature

    def final_receipt(self) -> tuple[Receipt, bytes] | None:
        """A receipt for everything owed now (before a close), or None if nothing new."""
        cumulative = self.base_bytes + self.amount_to_pay()
        latest = self.signer.latest
        if latest is not None and cumulative <= latest.cumulative_bytes:
            return None
        try:
            self.last_signed = self.signer.sign(cumulative)
        except LocalProtocolError:
            return None
        return self.last_signed


@dataclasses.dataclass
class Liveness:
    """Is the node still answering? Fed with receive-counter changes and latency samples.

    Attributes:
        dead_after_s: silence (no byte received) after which the node counts as gone.
        max_latency_s: latency above which, ``slow_samples`` times in a row, the node counts as gone.
    """

    dead_after_s: float = 1.5
    max_latency_s: float = 1.0
    slow_samples: int = 3
    last_rx_bytes: int = 0
    last_heard: float = 0.0
    _slow: int = 0

    def heard(self, rx_bytes: int, now: float) -> None:
        """The tunnel's receive counter for the node now."""
        if rx_bytes > self.last_rx_bytes:
            self.last_rx_bytes = rx_bytes
            self.last_heard = now

    def latency(self, seconds: float) -> None:
        """One latency sample."""
        self._slow = self._slow + 1 if seconds > self.max_latency_s else 0

    def waiting(self, seconds: float) -> None:
        """An unanswered probe has waited this long: a slow sample above the threshold, else no news."""
        if seconds > self.max_latency_s:
            self._slow += 1

    def answering(self, now: float) -> bool:
        """Has the node been heard from within ``dead_after_s`` (alive, if perhaps slow)?"""
        return now - self.last_heard <= self.dead_after_s

    def dead(self, now: float) -> str | None:
        """Why the node counts as gone, or None."""
        if now - self.last_heard > self.dead_after_s:
            return f"nothing received for {now - self.last_heard:.1f} s"
        if self._slow >= self.slow_samples:
            return f"latency above {self.max_latency_s * 1000:.0f} ms {self._slow} times in a row"
        return None


@dataclasses.dataclass
class LatencyProbe:
    """Round trips of the control channel, one PING outstanding at a time (sans-I/O).

    Every ``interval_s`` :meth:`due` says what to do: send a new PING (its nonce), and/or count the
    time an unanswered PING has waited as a sample (a node whose control service hangs while its
    WireGuard keepalives still arrive is slow, not fine). A PING unanswered for ``resend_after_s`` is
    replaced by a new one; a late PONG for a replaced nonce is ignored.
    """

    interval_s: float = 1.0
    resend_after_s: float = 5.0
    nonce: bytes | None = None
    sent_at: float = 0.0
    next_at: float = 0.0
    last_rtt_s: float | None = None
    _count: int = 0

    def due(self, now: float) -> tuple[bytes | None, float | None]:
        """``(nonce to send now or None, waiting sample in seconds or None)``."""
        if now < self.next_at:
            return None, None
        self.next_at = now + self.interval_s
        waited = now - self.sent_at if self.nonce is not None else None
        if waited is not None and waited < self.resend_after_s:
            return None, waited
        self._count += 1
        self.nonce, self.sent_at = self._count.to_bytes(8, "big"), now
        return self.nonce, waited

    def on_pong(self, body: bytes, now: float) -> float | None:
        """The round trip in seconds if ``body`` answers the outstanding PING, else None."""
        if self.nonce is None or body != self.nonce:
            return None
        self.nonce = None
        self.last_rtt_s = now - self.sent_at
        return self.last_rtt_s
