# pragma version ~=0.4.3
"""
@title Canonical ECDSA signature recovery
@license AGPL-3.0-or-later
@author Warren contributors
@notice One rule for every signature Warren's contracts accept (receipts,
        cooperative closes, guardian revocations): exactly 65 bytes
        r || s || v, v in {27, 28}, low s (EIP-2). Stateless: contracts
        import it and call `_recover`; nothing to initialise.
@custom:security The shape checks give their own revert strings; snekmate's
        ecdsa then re-checks s and refuses a zero-address recovery (an r
        that is not on the curve) with "ecdsa: invalid signature".
"""

from snekmate.utils import ecdsa


@internal
@pure
def _recover(digest: bytes32, signature: Bytes[65]) -> address:
    """
    @notice The address that signed `digest`.
    @param digest The 32-byte digest (an EIP-712 hash).
    @param signature r || s || v.
    @return The signer (never the zero address).
    """
    assert len(signature) == 65, "signature_recovery: invalid signature length"
    r: uint256 = extract32(signature, 0, output_type=uint256)
    s: uint256 = extract32(signature, 32, output_type=uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    assert v == 27 or v == 28, "signature_recovery: invalid signature v"
    assert s <= ecdsa._MALLEABILITY_THRESHOLD, "signature_recovery: malleable signature"
    return ecdsa._recover_vrs(digest, v, r, s)
