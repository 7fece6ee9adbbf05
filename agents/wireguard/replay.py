"""The transport counter's sliding anti-replay window (RFC 6479 style).

RFC 6479 keeps the window as a ring of machine words and, when a higher counter arrives, clears only
the words it skips instead of shifting the whole bitmap. This follows wireguard-go's replay.go: a ring
of 128 blocks of 64 bits, of which 127 blocks (8,128 counters) are the usable window; the spare block
lets the window slide without losing bits still inside it. Python ints stand in for the 64-bit words.
"""

__all__ = ["BLOCK_BITS", "RING_BLOCKS", "WINDOW_SIZE", "ReplayWindow"]

#: Bits per ring block (RFC 6479 uses the machine word).
BLOCK_BITS = 64
#: Blocks in the ring, a power of two (wireguard-go replay.go: ``ringBlocks = 1 << 7``).
RING_BLOCKS = 128
#: Counters below ``greatest - WINDOW_SIZE`` are refused as too old: 8,128 (>= the 2,048 required).
WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS

_RING_MASK = RING_BLOCKS - 1
_BIT_MASK = BLOCK_BITS - 1
_LOG_BLOCK_BITS = 6


class ReplayWindow:
    """Accepts each counter at most once, and none far behind the greatest seen.

    Not thread-safe: the device calls it under its lock.
    """

    __slots__ = ("greatest", "_ring")

    def __init__(self) -> None:
        self.greatest = 0
        self._ring = [0] * RING_BLOCKS

    def check_and_set(self, counter: int, limit: int) -> bool:
        """Record ``counter`` if it is new and inside the window.

        Args:
            counter: the authenticated packet's counter.
            limit: counters at or above it are refused (REJECT_AFTER_MESSAGES).

        Returns:
            True if the packet must be accepted, False if it is a replay, too old or over the limit.
        """
        if counter >= limit:
            return False
        ring = self._ring
        block = counter >> _LOG_BLOCK_BITS
        greatest = self.greatest
        if counter > greatest:
            current = greatest >> _LOG_BLOCK_BITS
            skipped = block - current
            if skipped > RING_BLOCKS:
                skipped = RING_BLOCKS
            for i in range(1, skipped + 1):
                ring[(current + i) & _RING_MASK] = 0
            self.greatest = counter
        elif greatest - counter > WINDOW_SIZE:
            return False
        block &= _RING_MASK
        bit = 1 << (counter & _BIT_MASK)
        word = ring[block]
        if word & bit:
            return False
        ring[block] = word | bit
        return True
