# pragma version ~=0.4.3
"""
@title Warren payment channels
@license AGPL-3.0-or-later
@author Warren contributors
@notice One-way channels from a client to a registered node, paid with
        cumulative EIP-712 receipts
        `Receipt(bytes32 channel_id,uint256 cumulative_bytes,uint256 cumulative_amount)`
        signed by the channel's payment signer (domain "Warren", "1",
        chainId, this contract). The node operator settles the latest
        receipt at any time and receives the increase since its previous
        settlement, less the protocol fee. Closing is cooperative (the node
        operator signs a `CooperativeClose` over the final receipt: immediate),
        unilateral (the client starts, the node may still settle during the
        challenge period, then anyone finalises and the client is refunded),
        or an immediate exit once the node is revoked or deregistered.
@custom:security Design decisions (docs/CONTRACTS.md has the rationale):
        - A channel id is keccak256(abi_encode(chain.id, self, node_id,
          client, signer)): one channel per (node, client, payment signer),
          ever, at this contract (the design gives each channel a fresh
          signer key). A finalised channel keeps its state (client, node
          registration, amounts, and the time it closed), so an id is
          never reused, old receipts can never pay again, and its history
          reads from `channel` without the logs. The signer is
          not stored: settle recomputes the id from the stored client, the
          node id of the stored registration index (`registry.node_id_at`)
          and the recovered address, which keeps a channel in two storage
          slots.
        - The id commits to the node so that nobody can block a client's
          open: without it, a front-runner could open a 1-wei channel for
          the same (client, signer) to another node and the client's own
          open would revert "channel exists". Now that channel has another
          id and the client's open still succeeds; a front-run open to the
          same node only funds the client's own channel. It also means a
          receipt signed for one node's channel never pays on a channel
          of the same signer to another node. Cost, measured with
          scripts/bench_gas.py: settle reads the node id back with one
          more registry call (+2,620 gas, 61,882); storing it instead would
          take a third new slot at open (+22,100, over the 110,000 target).
        - Both receipt fields must strictly grow at each settlement; the
          bytes counter is stored as uint64 and amounts as uint96 (79e9
          tokens at 18 decimals), packed with the deposit into one slot.
        - The fee is `settled * fee_bps // 10_000` on the cumulative
          settled amount (rounded down, in the node's favour against the
          treasury, never against the client); the node receives the rest
          at each settlement and the treasury is paid when the channel
          closes, so settle does no fee bookkeeping and rounding never
          drifts over many small settlements.
        - Settlement window: the node may settle (or close cooperatively)
          while `block.timestamp < close_at`; finalisation is possible
          from `block.timestamp >= close_at`. There is no instant in
          which both or neither are possible.
        - `open_channel_with_permit` tolerates a front-run permit: when
          the permit call fails it goes on if the allowance covers the
          deposit ("permit failed" otherwise).
        - Signatures: exactly 65 bytes, v in {27, 28}, low s (EIP-2);
          snekmate's ecdsa refuses a zero-address recovery.
"""

from ethereum.ercs import IERC20

# @dev The interface other contracts (voucher_pool) compile against.
from interfaces import payment_channels as IPaymentChannels
implements: IPaymentChannels

# @dev The registry slice this contract reads: node refs and head words.
from interfaces import node_registry as INodeRegistry

# @dev Canonical 65-byte signature recovery, shared with revocation_registry
# and voucher_pool (stateless, so neither `uses` nor `initializes`).
from modules import signature_recovery

# @dev The Receipt and CooperativeClose struct hashes (shared with voucher_pool).
from modules import receipt_types

# @dev Caches the EIP-712 domain separator ("Warren", "1", chainId, this
# contract) and answers EIP-5267 `eip712Domain`; initialised here because
# its immutables live in this contract.
from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator

# @dev Wallets discover the receipt domain through EIP-5267.
exports: eip712_domain_separator.eip712Domain


# EVENTS

event ChannelOpened:
    channel_id: indexed(bytes32)
    node_id: indexed(bytes32)
    client: indexed(address)
    signer: address
    deposit: uint256
    price_per_gib: uint256

event ChannelToppedUp:
    channel_id: indexed(bytes32)
    amount: uint256
    deposit: uint256

event ReceiptSettled:
    channel_id: indexed(bytes32)
    cumulative_bytes: uint256
    cumulative_amount: uint256
    node_amount: uint256

event ChannelCloseStarted:
    channel_id: indexed(bytes32)
    close_at: uint256

# @dev `kind`: 1 cooperative, 2 unilateral (finalised), 3 exit from a
# revoked or deregistered node. `settled` includes `fee`.
event ChannelClosed:
    channel_id: indexed(bytes32)
    kind: uint8
    settled: uint256
    refund: uint256
    fee: uint256


# CONSTANTS

# @dev Basis points in one whole (fee_bps is out of this).
_BPS: constant(uint256) = 10_000
# @dev Highest protocol fee the constructor accepts: 10 %.
_MAX_FEE_BPS: constant(uint256) = 1_000
# @dev Longest challenge period the constructor accepts: a year (also keeps close_at in 56 bits).
_MAX_CHALLENGE_PERIOD: constant(uint256) = 365 * 86_400

# @dev EIP-2612 `permit`, called with raw_call so that a front-run permit does not block the open.
_PERMIT_SELECTOR: constant(bytes4) = method_id("permit(address,address,uint256,uint256,uint8,bytes32,bytes32)", output_type=bytes4)

# @dev Channel states (bits 248-255 of the meta word).
_OPEN: constant(uint256) = 1
_CLOSING: constant(uint256) = 2
_FINALISED: constant(uint256) = 3

# @dev ChannelClosed kinds.
_KIND_COOPERATIVE: constant(uint8) = 1
_KIND_UNILATERAL: constant(uint8) = 2
_KIND_EXIT: constant(uint8) = 3

# @dev Bit layout of the two packed words per channel.
# meta:    client (0-159) | node index (160-191) | close_at (192-247) | state (248-255)
# amounts: deposit (0-95) | settled (96-191) | settled bytes (192-255)
_ADDRESS_MASK: constant(uint256) = (1 << 160) - 1
_INDEX_MASK: constant(uint256) = (1 << 32) - 1
_TIME_MASK: constant(uint256) = (1 << 56) - 1
_AMOUNT_MASK: constant(uint256) = (1 << 96) - 1
_MAX_AMOUNT: constant(uint256) = (1 << 96) - 1
_MAX_BYTES: constant(uint256) = (1 << 64) - 1

# @dev node_registry head word bits (see node_registry.vy).
_REVOKED_BIT: constant(uint256) = 1 << 160
# @dev node_registry listing word: price (bits 0-239) | region's ASCII bytes (240-255).
_REGION_SHIFT: constant(uint256) = 240
_PRICE_MASK: constant(uint256) = (1 << 240) - 1


# STORAGE

# @dev The payment token.
token: public(immutable(IERC20))
# @dev The node registry (operators, revocation).
registry: public(immutable(INodeRegistry))
# @dev Protocol fee in basis points of each settled amount.
fee_bps: public(immutable(uint256))
# @dev Receives the protocol fees.
treasury: public(immutable(address))
# @dev Seconds the node has to settle after a client starts a unilateral close.
challenge_period: public(immutable(uint256))

# @dev channel_id -> packed client | node index | close_at | state.
_meta: HashMap[bytes32, uint256]
# @dev channel_id -> packed deposit | settled amount | settled bytes.
_amounts: HashMap[bytes32, uint256]
# @dev region (its two ASCII bytes as a number, e.g. 0x4445 for "DE") -> cumulative amount paid
# by closed channels to nodes listed there, fee included, token wei: the demand rewards.vy weighs
# regions by. Counted at close, once per channel, so settle pays nothing for it.
region_paid: public(HashMap[uint256, uint256])


@deploy
def __init__(
    token_: IERC20, registry_: INodeRegistry, fee_bps_: uint256, treasury_: address, challenge_period_: uint256
):
    """
    @notice Deploy the channel contract.
    @param token_ The payment token.
    @param registry_ The node registry.
    @param fee_bps_ Protocol fee in basis points (at most 1,000 = 10 %; may be 0).
    @param treasury_ Receives the fees.
    @param challenge_period_ Seconds a node has to settle after a unilateral close starts (1 s to 365 days).
    """
    assert token_.address != empty(address), "payment_channels: zero address"
    assert registry_.address != empty(address), "payment_channels: zero address"
    assert treasury_ != empty(address), "payment_channels: zero address"
    assert fee_bps_ <= _MAX_FEE_BPS, "payment_channels: fee too high"
    assert challenge_period_ != 0, "payment_channels: zero challenge period"
    assert challenge_period_ <= _MAX_CHALLENGE_PERIOD, "payment_channels: challenge period too long"
    eip712_domain_separator.__init__("Warren", "1")
    token = token_
    registry = registry_
    fee_bps = fee_bps_
    treasury = treasury_
    challenge_period = challenge_period_


# OPENING AND FUNDING

@external
def open_channel(node_id: bytes32, client: address, signer: address, deposit: uint256) -> bytes32:
    """
    @notice Open a channel to an active node, funded by msg.sender with
            transferFrom (approve this contract first).
    @param node_id The node (keccak256 of its WireGuard key).
    @param client Receives refunds and may start a unilateral close.
    @param signer Signs receipts (may equal `client`).
    @param deposit Deposit in token wei (> 0, < 2**96).
    @return channel_id The new channel's id.
    """
    return self._open(node_id, client, signer, deposit)


@external
def open_channel_with_permit(
    node_id: bytes32, client: address, signer: address, deposit: uint256,
    deadline: uint256, v: uint8, r: bytes32, s: bytes32,
) -> bytes32:
    """
    @notice Open a channel in one transaction with an EIP-2612 permit from
            msg.sender for `deposit` to this contract. A permit that fails
            (for instance because someone front-ran it) is ignored when the
            allowance already covers the deposit.
    @param node_id The node.
    @param client Receives refunds and may start a unilateral close.
    @param signer Signs receipts.
    @param deposit Deposit in token wei.
    @param deadline Permit deadline (unix seconds).
    @param v Permit signature v.
    @param r Permit signature r.
    @param s Permit signature s.
    @return channel_id The new channel's id.
    """
    # Anyone who sees this transaction can submit the permit first and use up its nonce, which
    # would make a plain `extcall permit` revert (a cheap grief). The allowance it set is there
    # all the same, so a failed permit only matters when the allowance does not cover the deposit.
    permitted: bool = raw_call(
        token.address,
        abi_encode(msg.sender, self, deposit, deadline, v, r, s, method_id=_PERMIT_SELECTOR),
        revert_on_failure=False,
    )
    if not permitted:
        assert staticcall token.allowance(msg.sender, self) >= deposit, "payment_channels: permit failed"
    return self._open(node_id, client, signer, deposit)


@external
def top_up(channel_id: bytes32, amount: uint256):
    """
    @notice Add to an open channel's deposit (anyone may), pulled from
            msg.sender with transferFrom.
    @param channel_id The channel.
    @param amount Amount in token wei (> 0).
    """
    assert amount != 0, "payment_channels: zero amount"
    state: uint256 = self._meta[channel_id] >> 248
    self._check_exists(state)
    assert state != _FINALISED, "payment_channels: channel finalised"
    assert state == _OPEN, "payment_channels: channel closing"
    amounts: uint256 = self._amounts[channel_id]
    deposit: uint256 = (amounts & _AMOUNT_MASK) + amount
    assert deposit <= _MAX_AMOUNT, "payment_channels: deposit too large"
    self._amounts[channel_id] = (amounts & ~_AMOUNT_MASK) | deposit
    self._pull(msg.sender, amount)
    log ChannelToppedUp(channel_id=channel_id, amount=amount, deposit=deposit)


# SETTLEMENT

@external
def settle(channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256, signature: Bytes[65]):
    """
    @notice Settle the latest receipt (node operator only): pays the
            operator the increase over the previous settlement less the fee.
            Allowed while the channel is open and, after a unilateral close
            starts, until `close_at` (exclusive).
    @param channel_id The channel.
    @param cumulative_bytes Bytes carried since the channel opened (must grow).
    @param cumulative_amount Token wei owed since the channel opened (must grow, <= deposit).
    @param signature The payment signer's 65-byte EIP-712 signature.
    """
    meta: uint256 = self._meta[channel_id]
    self._check_settleable(meta)
    operator: address = self._node_operator(meta)
    assert msg.sender == operator, "payment_channels: not the node operator"

    amounts: uint256 = self._amounts[channel_id]
    deposit: uint256 = amounts & _AMOUNT_MASK
    settled: uint256 = (amounts >> 96) & _AMOUNT_MASK
    assert cumulative_amount > settled, "payment_channels: stale amount"
    assert cumulative_bytes > amounts >> 192, "payment_channels: stale bytes"
    assert cumulative_amount <= deposit, "payment_channels: amount exceeds deposit"
    assert cumulative_bytes <= _MAX_BYTES, "payment_channels: bytes too large"
    digest: bytes32 = self._receipt_digest(channel_id, cumulative_bytes, cumulative_amount)
    self._check_signer(channel_id, meta, signature_recovery._recover(digest, signature))

    self._amounts[channel_id] = deposit | (cumulative_amount << 96) | (cumulative_bytes << 192)
    paid: uint256 = self._node_share(cumulative_amount) - self._node_share(settled)
    if paid != 0:
        self._push(operator, paid)
    log ReceiptSettled(
        channel_id=channel_id, cumulative_bytes=cumulative_bytes,
        cumulative_amount=cumulative_amount, node_amount=paid,
    )


# CLOSING

@external
def cooperative_close(
    channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256,
    signature: Bytes[65], node_signature: Bytes[65],
):
    """
    @notice Close at once with the final receipt, signed by the payment
            signer, and the node operator's EIP-712
            `CooperativeClose(channel_id, cumulative_bytes, cumulative_amount)`
            over the same figures. Anyone may submit. The node gets the rest
            of its share, the treasury the fee, the client the remainder.
    @param channel_id The channel (open, or closing before `close_at`).
    @param cumulative_bytes Final bytes (>= the settled bytes).
    @param cumulative_amount Final amount in token wei (>= settled, <= deposit).
    @param signature The payment signer's Receipt signature.
    @param node_signature The node operator's CooperativeClose signature.
    """
    meta: uint256 = self._meta[channel_id]
    # The same window as settle: once a unilateral close's challenge period is over, a receipt the
    # node did not settle in time no longer pays, cooperatively or not.
    self._check_settleable(meta)
    operator: address = self._node_operator(meta)

    amounts: uint256 = self._amounts[channel_id]
    deposit: uint256 = amounts & _AMOUNT_MASK
    settled: uint256 = (amounts >> 96) & _AMOUNT_MASK
    assert cumulative_amount >= settled, "payment_channels: stale amount"
    assert cumulative_bytes >= amounts >> 192, "payment_channels: stale bytes"
    assert cumulative_amount <= deposit, "payment_channels: amount exceeds deposit"
    assert cumulative_bytes <= _MAX_BYTES, "payment_channels: bytes too large"
    digest: bytes32 = self._receipt_digest(channel_id, cumulative_bytes, cumulative_amount)
    self._check_signer(channel_id, meta, signature_recovery._recover(digest, signature))
    digest = self._close_digest(channel_id, cumulative_bytes, cumulative_amount)
    assert signature_recovery._recover(digest, node_signature) == operator, "payment_channels: wrong node signature"

    self._meta[channel_id] = self._finalised_meta(meta)
    self._amounts[channel_id] = deposit | (cumulative_amount << 96) | (cumulative_bytes << 192)
    paid: uint256 = self._node_share(cumulative_amount) - self._node_share(settled)
    if paid != 0:
        self._push(operator, paid)
    self._pay_out(channel_id, _KIND_COOPERATIVE, deposit, cumulative_amount, (meta >> 160) & _INDEX_MASK)


@external
def start_close(channel_id: bytes32):
    """
    @notice Start a unilateral close (client only). The node may settle
            until `close_at = now + challenge_period` (exclusive).
    @param channel_id The channel.
    """
    meta: uint256 = self._meta[channel_id]
    state: uint256 = meta >> 248
    self._check_exists(state)
    assert state != _FINALISED, "payment_channels: channel finalised"
    assert state == _OPEN, "payment_channels: channel closing"
    assert msg.sender == convert(meta & _ADDRESS_MASK, address), "payment_channels: not the client"
    close_at: uint256 = block.timestamp + challenge_period
    self._meta[channel_id] = (meta & ((1 << 192) - 1)) | (close_at << 192) | (_CLOSING << 248)
    log ChannelCloseStarted(channel_id=channel_id, close_at=close_at)


@external
def finalize_close(channel_id: bytes32):
    """
    @notice Finish a unilateral close from `close_at` on (anyone may call):
            the client gets the deposit less the settled amount, the
            treasury the fee.
    @param channel_id The channel.
    """
    meta: uint256 = self._meta[channel_id]
    state: uint256 = meta >> 248
    self._check_exists(state)
    assert state != _FINALISED, "payment_channels: channel finalised"
    assert state == _CLOSING, "payment_channels: channel not closing"
    assert block.timestamp >= (meta >> 192) & _TIME_MASK, "payment_channels: challenge period not over"
    self._finalise(channel_id, meta, _KIND_UNILATERAL)


@external
def exit_revoked(channel_id: bytes32):
    """
    @notice Close at once because the node was revoked (or withdrew its
            stake and deregistered): it can no longer settle, so nothing
            is left to wait for. Anyone may call; the client is refunded.
    @param channel_id The channel.
    """
    meta: uint256 = self._meta[channel_id]
    state: uint256 = meta >> 248
    self._check_exists(state)
    assert state != _FINALISED, "payment_channels: channel finalised"
    head: uint256 = staticcall registry.node_head((meta >> 160) & _INDEX_MASK)
    assert head & _REVOKED_BIT != 0 or head & _ADDRESS_MASK == 0, "payment_channels: node not revoked"
    self._finalise(channel_id, meta, _KIND_EXIT)


# VIEWS

@external
@view
def channel(channel_id: bytes32) -> (bytes32, address, uint256, uint256, uint256, uint256, uint256):
    """
    @notice A channel's state. The payment signer is not stored (it is
            part of the id with the node: see `channel_id_of`; ChannelOpened logs it).
    @param channel_id The channel.
    @return node_id The node it pays.
    @return client Refund address.
    @return deposit Deposit in token wei.
    @return settled Cumulative settled amount in token wei (fee included).
    @return settled_bytes Cumulative bytes of the last settled receipt.
    @return close_at While closing, the end of the challenge period; once finalised, the time
            (unix seconds) it was finalised; 0 while open.
    @return state 0 none, 1 open, 2 closing, 3 finalised.
    """
    meta: uint256 = self._meta[channel_id]
    amounts: uint256 = self._amounts[channel_id]
    node_id: bytes32 = empty(bytes32)
    if meta != 0:
        node_id = staticcall registry.node_id_at((meta >> 160) & _INDEX_MASK)
    return (
        node_id, convert(meta & _ADDRESS_MASK, address), amounts & _AMOUNT_MASK,
        (amounts >> 96) & _AMOUNT_MASK, amounts >> 192, (meta >> 192) & _TIME_MASK, meta >> 248,
    )


@external
@view
def channel_id_of(node_id: bytes32, client: address, signer: address) -> bytes32:
    """
    @notice The id of the (only) channel a client and payment signer can
            have to a node here (computable before the node registers).
    @param node_id The node (keccak256 of its WireGuard key).
    @param client Refund address.
    @param signer Receipt signer.
    @return channel_id keccak256(abi_encode(chain.id, this contract, node_id, client, signer)).
    """
    return self._channel_id(node_id, client, signer)


@external
@view
def receipt_digest(channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a payment signer signs for a receipt.
    @param channel_id The channel.
    @param cumulative_bytes Bytes carried since the channel opened.
    @param cumulative_amount Token wei owed since the channel opened.
    @return digest The 32-byte digest.
    """
    return self._receipt_digest(channel_id, cumulative_bytes, cumulative_amount)


@external
@view
def close_digest(channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256) -> bytes32:
    """
    @notice The EIP-712 digest the node operator signs to close cooperatively.
    @param channel_id The channel.
    @param cumulative_bytes Final bytes.
    @param cumulative_amount Final amount in token wei.
    @return digest The 32-byte digest.
    """
    return self._close_digest(channel_id, cumulative_bytes, cumulative_amount)


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    """
    @notice The EIP-712 domain separator of receipts on this chain.
    @return separator The 32-byte domain separator.
    """
    return eip712_domain_separator._domain_separator_v4()


@external
@view
def fee_of(settled: uint256) -> uint256:
    """
    @notice The protocol fee on a cumulative settled amount.
    @param settled Cumulative settled amount in token wei.
    @return fee Fee in token wei, rounded down.
    """
    return settled * fee_bps // _BPS


# INTERNAL

@internal
def _open(node_id: bytes32, client: address, signer: address, deposit: uint256) -> bytes32:
    assert client != empty(address) and signer != empty(address), "payment_channels: zero address"
    assert deposit != 0, "payment_channels: zero deposit"
    assert deposit <= _MAX_AMOUNT, "payment_channels: deposit too large"
    index: uint256 = 0
    active: bool = False
    index, active = staticcall registry.node_ref(node_id)
    assert active, "payment_channels: node not active"
    assert index <= _INDEX_MASK, "payment_channels: node index too large"

    channel_id: bytes32 = self._channel_id(node_id, client, signer)
    assert self._meta[channel_id] == 0, "payment_channels: channel exists"
    self._meta[channel_id] = convert(client, uint256) | (index << 160) | (_OPEN << 248)
    self._amounts[channel_id] = deposit
    self._pull(msg.sender, deposit)
    # The channel's price: the listing at open. Receipts are signed by the client at this price, so
    # a later update_node never changes what an open channel pays (docs/ECONOMICS.md).
    price: uint256 = (staticcall registry.listing_at(index)) & _PRICE_MASK
    log ChannelOpened(
        channel_id=channel_id, node_id=node_id, client=client, signer=signer, deposit=deposit, price_per_gib=price,
    )
    return channel_id


@internal
def _finalise(channel_id: bytes32, meta: uint256, kind: uint8):
    amounts: uint256 = self._amounts[channel_id]
    self._meta[channel_id] = self._finalised_meta(meta)
    self._pay_out(channel_id, kind, amounts & _AMOUNT_MASK, (amounts >> 96) & _AMOUNT_MASK, (meta >> 160) & _INDEX_MASK)


@internal
@view
def _finalised_meta(meta: uint256) -> uint256:
    # Keeps the client and the registration index (so `channel` still names the node) and puts the
    # time of finalisation in close_at: history stays readable without the logs, and it costs no
    # more than clearing them, since the word is written either way.
    return (meta & ((1 << 192) - 1)) | (block.timestamp << 192) | (_FINALISED << 248)


@internal
def _pay_out(channel_id: bytes32, kind: uint8, deposit: uint256, settled: uint256, index: uint256):
    # The channel is already marked finalised: count its payments as demand in the region of the
    # registration it paid (`index`; its listing now: where it serves), refund the client, pay the fee.
    refund: uint256 = deposit - settled
    fee: uint256 = settled * fee_bps // _BPS
    if settled != 0:
        listing: uint256 = staticcall registry.listing_at(index)
        self.region_paid[listing >> _REGION_SHIFT] += settled
    if refund != 0:
        self._push(convert(self._meta[channel_id] & _ADDRESS_MASK, address), refund)
    if fee != 0:
        self._push(treasury, fee)
    log ChannelClosed(channel_id=channel_id, kind=kind, settled=settled, refund=refund, fee=fee)


@internal
@view
def _channel_id(node_id: bytes32, client: address, signer: address) -> bytes32:
    return keccak256(abi_encode(chain.id, self, node_id, client, signer))


@internal
@view
def _check_signer(channel_id: bytes32, meta: uint256, recovered: address):
    # The id commits to the node and the signer: recompute it from the stored client, the node id
    # of the stored registration (kept by the registry after a withdrawal) and the recovered address.
    client: address = convert(meta & _ADDRESS_MASK, address)
    node_id: bytes32 = staticcall registry.node_id_at((meta >> 160) & _INDEX_MASK)
    assert self._channel_id(node_id, client, recovered) == channel_id, "payment_channels: wrong signer"


@internal
@pure
def _check_exists(state: uint256):
    assert state != 0, "payment_channels: unknown channel"


@internal
@view
def _check_settleable(meta: uint256):
    state: uint256 = meta >> 248
    self._check_exists(state)
    assert state != _FINALISED, "payment_channels: channel finalised"
    if state == _CLOSING:
        assert block.timestamp < (meta >> 192) & _TIME_MASK, "payment_channels: challenge period over"


@internal
@view
def _node_operator(meta: uint256) -> address:
    # One registry read: the head word of the registration the channel was opened to.
    head: uint256 = staticcall registry.node_head((meta >> 160) & _INDEX_MASK)
    assert head & _REVOKED_BIT == 0, "payment_channels: node revoked"
    return convert(head & _ADDRESS_MASK, address)


@internal
@view
def _node_share(settled: uint256) -> uint256:
    return settled - settled * fee_bps // _BPS


@internal
@view
def _receipt_digest(channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256) -> bytes32:
    return eip712_domain_separator._hash_typed_data_v4(
        receipt_types._receipt_hash(channel_id, cumulative_bytes, cumulative_amount)
    )


@internal
@view
def _close_digest(channel_id: bytes32, cumulative_bytes: uint256, cumulative_amount: uint256) -> bytes32:
    return eip712_domain_separator._hash_typed_data_v4(
        receipt_types._close_hash(channel_id, cumulative_bytes, cumulative_amount)
    )


@internal
def _pull(owner: address, amount: uint256):
    assert extcall token.transferFrom(owner, self, amount, default_return_value=True), "payment_channels: transfer failed"


@internal
def _push(to: address, amount: uint256):
    assert extcall token.transfer(to, amount, default_return_value=True), "payment_channels: transfer failed"
