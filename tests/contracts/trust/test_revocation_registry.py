"""revocation_registry.vy: guardian-quorum EIP-712 revocation and the owner-managed guardian set."""

import ape
import pytest
from eth_keys import keys

from agents.chain import eip712

from trust_params import GUARDIAN_QUORUM

# secp256k1 group order (SEC 2, section 2.4.1); s above N // 2 is the high-s twin EIP-2 forbids.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
EVIDENCE = bytes.fromhex("ee" * 32)


def high_s_twin(signature: bytes) -> bytes:
    """The other valid encoding of the same signature: s -> N - s, v flipped (EIP-2 malleability)."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


@pytest.fixture
def quorum_signers(guardians):
    """The first GUARDIAN_QUORUM guardians."""
    return list(guardians)[:GUARDIAN_QUORUM]


def test_deploy__guardians_and_quorum__logged(revocations, guardians, treasury, owner):
    assert revocations.guardian_count() == len(guardians)
    assert revocations.quorum() == GUARDIAN_QUORUM
    assert revocations.treasury() == treasury.address
    assert revocations.owner() == owner.address
    assert all(revocations.is_guardian(g) for g in guardians)
    deployment = revocations.creation_metadata.receipt
    added = list(deployment.events.filter(revocations.GuardianAdded))
    assert [e.guardian for e in added] == [g.address for g in guardians]
    [quorum_event] = deployment.events.filter(revocations.QuorumChanged)
    assert (quorum_event.old_quorum, quorum_event.new_quorum) == (0, GUARDIAN_QUORUM)


def test_revocation_digest__equals_python_eip712_digest(chain, revocations, node):
    message = eip712.Revocation(node_id=bytes(node), evidence_hash=EVIDENCE, nonce=7)
    assert revocations.revocation_digest(node, EVIDENCE, 7) == eip712.digest(
        message, chain.chain_id, revocations.address
    )


def test_revoke__guardian_quorum__revokes_slashes_and_logs(
    revocations, registry, token, treasury, quorum_signers, sign_revocation, node, client
):
    stake = registry.node_stake(node)
    treasury_before = token.balanceOf(treasury)
    signatures = sign_revocation(quorum_signers, node, EVIDENCE, nonce=1)

    # Anyone may submit the guardians' signatures; the stake goes to the treasury, not the submitter.
    tx = revocations.revoke(node, EVIDENCE, 1, signatures, sender=client)

    assert tx.return_value == stake
    assert registry.is_revoked(node)
    assert not registry.is_active(node)
    assert registry.node_stake(node) == 0
    assert token.balanceOf(treasury) - treasury_before == stake
    [event] = tx.events.filter(revocations.NodeRevoked)
    assert (event.node_id, event.evidence_hash, event.nonce) == (node, EVIDENCE, 1)
    assert (event.slashed, event.submitter) == (stake, client.address)


def test_revoke__more_than_quorum__accepted(revocations, registry, guardians, sign_revocation, node, client):
    assert len(guardians) > GUARDIAN_QUORUM
    revocations.revoke(node, EVIDENCE, 0, sign_revocation(list(guardians), node, EVIDENCE), sender=client)
    assert registry.is_revoked(node)


def test_revoke__too_few_signatures__reverts(revocations, quorum_signers, sign_revocation, node, client):
    signatures = sign_revocation(quorum_signers[:-1], node, EVIDENCE)
    with ape.reverts("revocation_registry: too few signatures"):
        revocations.revoke(node, EVIDENCE, 0, signatures, sender=client)


def test_revoke__duplicate_signer__reverts(revocations, quorum_signers, sign_revocation, node, client):
    signatures = sign_revocation(quorum_signers[:-1], node, EVIDENCE)
    with ape.reverts("revocation_registry: duplicate signer"):
        revocations.revoke(node, EVIDENCE, 0, [signatures[0], *signatures], sender=client)


def test_revoke__duplicate_signer_in_other_encoding__reverts(revocations, quorum_signers, sign_revocation, node, client):
    # The same guardian twice can also not sneak through as a different byte string: the only other
    # encoding of its signature is the high-s twin, which is refused outright.
    signatures = sign_revocation(quorum_signers, node, EVIDENCE)
    with ape.reverts("signature_recovery: malleable signature"):
        revocations.revoke(node, EVIDENCE, 0, [signatures[0], high_s_twin(signatures[0]), signatures[1]], sender=client)


def test_revoke__signers_not_ascending__reverts(revocations, quorum_signers, sign_revocation, node, client):
    signatures = sign_revocation(quorum_signers, node, EVIDENCE)
    with ape.reverts("revocation_registry: signers not ascending"):
        revocations.revoke(node, EVIDENCE, 0, signatures[::-1], sender=client)


def test_revoke__non_guardian_signature__reverts(revocations, quorum_signers, client, sign_revocation, node):
    assert not revocations.is_guardian(client)
    signatures = sign_revocation([*quorum_signers[:-1], client], node, EVIDENCE)
    with ape.reverts("revocation_registry: not a guardian"):
        revocations.revoke(node, EVIDENCE, 0, signatures, sender=client)


def test_revoke__removed_guardian__reverts(revocations, owner, guardians, quorum_signers, sign_revocation, node, client):
    revocations.remove_guardian(quorum_signers[0], sender=owner)
    signatures = sign_revocation(quorum_signers, node, EVIDENCE)
    with ape.reverts("revocation_registry: not a guardian"):
        revocations.revoke(node, EVIDENCE, 0, signatures, sender=client)


def test_revoke__high_s_signature__reverts(revocations, quorum_signers, sign_revocation, node, client):
    signatures = sign_revocation(quorum_signers, node, EVIDENCE)
    twin = high_s_twin(signatures[0])
    # The twin is a valid signature by the same guardian, so only the low-s rule refuses it.
    digest = revocations.revocation_digest(node, EVIDENCE, 0)
    signature = keys.Signature(vrs=(twin[64] - 27, int.from_bytes(twin[:32], "big"), int.from_bytes(twin[32:64], "big")))
    assert signature.recover_public_key_from_msg_hash(bytes(digest)).to_checksum_address() == (
        sorted(quorum_signers, key=lambda a: int(a.address, 16))[0].address
    )
    with ape.reverts("signature_recovery: malleable signature"):
        revocations.revoke(node, EVIDENCE, 0, [twin, *signatures[1:]], sender=client)


def test_revoke__compact_or_short_signature__reverts(revocations, quorum_signers, sign_revocation, node, client):
    signatures = sign_revocation(quorum_signers, node, EVIDENCE)
    with ape.reverts("signature_recovery: invalid signature length"):
        revocations.revoke(node, EVIDENCE, 0, [signatures[0][:64], *signatures[1:]], sender=client)


def test_revoke__bad_v__reverts(revocations, quorum_signers, sign_revocation, node, client):
    signatures = sign_revocation(quorum_signers, node, EVIDENCE)
    with ape.reverts("signature_recovery: invalid signature v"):
        revocations.revoke(node, EVIDENCE, 0, [signatures[0][:64] + b"\x01", *signatures[1:]], sender=client)


def test_revoke__zero_address_recovery__reverts(revocations, quorum_signers, sign_revocation, node, client):
    # r = 0 is not a curve point: ecrecover yields the zero address, which snekmate's ecdsa refuses.
    signatures = sign_revocation(quorum_signers, node, EVIDENCE)
    bogus = bytes(32) + signatures[0][32:]
    with ape.reverts("ecdsa: invalid signature"):
        revocations.revoke(node, EVIDENCE, 0, [bogus, *signatures[1:]], sender=client)


def test_revoke__signed_for_another_chain_id__reverts(chain, revocations, quorum_signers, sign_revocation, node, client):
    signatures = sign_revocation(quorum_signers, node, EVIDENCE, chain_id=chain.chain_id + 1)
    with ape.reverts("revocation_registry: not a guardian"):
        revocations.revoke(node, EVIDENCE, 0, signatures, sender=client)


def test_revoke__signed_for_another_contract__reverts(
    project, owner, registry, treasury, guardians, revocations, quorum_signers, sign_revocation, node, client
):
    other = owner.deploy(project.revocation_registry, registry, treasury, list(guardians), GUARDIAN_QUORUM)
    signatures = sign_revocation(quorum_signers, node, EVIDENCE, contract=other)
    with ape.reverts("revocation_registry: not a guardian"):
        revocations.revoke(node, EVIDENCE, 0, signatures, sender=client)


def test_revoke__other_fields_than_signed__reverts(revocations, quorum_signers, sign_revocation, node, client):
    signatures = sign_revocation(quorum_signers, node, EVIDENCE, nonce=1)
    with ape.reverts("revocation_registry: not a guardian"):
        revocations.revoke(node, EVIDENCE, 2, signatures, sender=client)


def test_revoke__replayed__reverts(revocations, quorum_signers, sign_revocation, node, client):
    signatures = sign_revocation(quorum_signers, node, EVIDENCE)
    revocations.revoke(node, EVIDENCE, 0, signatures, sender=client)
    with ape.reverts("revocation_registry: already revoked"):
        revocations.revoke(node, EVIDENCE, 0, signatures, sender=client)


def test_revoke__then_same_key_registers_again__reverts(
    revocations, registry, operator, client, quorum_signers, sign_revocation, register_node, node
):
    wg_key = registry.node_wg_key(node)
    revocations.revoke(node, EVIDENCE, 0, sign_revocation(quorum_signers, node, EVIDENCE), sender=client)
    with ape.reverts("node_registry: key revoked"):
        register_node(operator, wg_key=wg_key)


def test_revoke__then_challenger_report__reverts(
    revocations, reputation, panel, quorum_signers, sign_revocation, node, client, start_epoch
):
    revocations.revoke(node, EVIDENCE, 0, sign_revocation(quorum_signers, node, EVIDENCE), sender=client)
    epoch = start_epoch(reputation)
    with ape.reverts("reputation: node revoked"):
        reputation.report(node, epoch, 1, 1, False, sender=panel[0])


def test_revoke__open_channel__settle_refused_and_client_exits_at_once(
    revocations, channels, token, operator, client, quorum_signers, sign_revocation, node, open_channel, sign_receipt
):
    deposit, paid = 40 * 10**18, 3 * 10**18
    channel_id = open_channel(node, deposit=deposit)
    channels.settle(channel_id, 10**6, paid, sign_receipt(channel_id, 10**6, paid), sender=operator)
    with ape.reverts("payment_channels: node not revoked"):
        channels.exit_revoked(channel_id, sender=client)

    revocations.revoke(node, EVIDENCE, 0, sign_revocation(quorum_signers, node, EVIDENCE), sender=client)

    later = sign_receipt(channel_id, 2 * 10**6, 2 * paid)
    with ape.reverts("payment_channels: node revoked"):
        channels.settle(channel_id, 2 * 10**6, 2 * paid, later, sender=operator)
    # No challenge period: the client takes back everything not yet settled in the same block.
    before = token.balanceOf(client)
    tx = channels.exit_revoked(channel_id, sender=client)
    assert token.balanceOf(client) - before == deposit - paid
    [closed] = tx.events.filter(channels.ChannelClosed)
    assert (closed.channel_id, closed.kind, closed.settled, closed.refund) == (channel_id, 3, paid, deposit - paid)


def test_revoke__not_the_registry_revoker__reverts(
    project, owner, registry, treasury, guardians, quorum_signers, sign_revocation, node, client
):
    unauthorised = owner.deploy(project.revocation_registry, registry, treasury, list(guardians), GUARDIAN_QUORUM)
    signatures = sign_revocation(quorum_signers, node, EVIDENCE, contract=unauthorised)
    with ape.reverts("node_registry: not the revoker"):
        unauthorised.revoke(node, EVIDENCE, 0, signatures, sender=client)


# Guardian set management (owner only) ------------------------------------------------------------


def test_add_guardian__logged_and_counts(revocations, owner, client):
    tx = revocations.add_guardian(client, sender=owner)
    assert revocations.is_guardian(client)
    [event] = tx.events.filter(revocations.GuardianAdded)
    assert (event.guardian, event.guardian_count) == (client.address, revocations.guardian_count())


def test_add_guardian__bad_input__reverts(revocations, owner, guardians):
    with ape.reverts("revocation_registry: zero address"):
        revocations.add_guardian(ape.utils.ZERO_ADDRESS, sender=owner)
    with ape.reverts("revocation_registry: already a guardian"):
        revocations.add_guardian(guardians[0], sender=owner)


def test_add_guardian__beyond_limit__reverts(project, owner, registry, treasury, accounts):
    full = owner.deploy(
        project.revocation_registry, registry, treasury, [f"0x{i:040x}" for i in range(1, 33)], 1
    )
    with ape.reverts("revocation_registry: too many guardians"):
        full.add_guardian(accounts[0], sender=owner)


def test_remove_guardian__logged(revocations, owner, guardians):
    count = revocations.guardian_count()
    tx = revocations.remove_guardian(guardians[0], sender=owner)
    assert not revocations.is_guardian(guardians[0])
    [event] = tx.events.filter(revocations.GuardianRemoved)
    assert (event.guardian, event.guardian_count) == (guardians[0].address, count - 1)


def test_remove_guardian__below_quorum_or_unknown__reverts(revocations, owner, guardians, client):
    with ape.reverts("revocation_registry: not a guardian"):
        revocations.remove_guardian(client, sender=owner)
    revocations.set_quorum(revocations.guardian_count(), sender=owner)
    with ape.reverts("revocation_registry: quorum above guardian count"):
        revocations.remove_guardian(guardians[0], sender=owner)


def test_set_quorum__logged_and_bounded(revocations, owner):
    tx = revocations.set_quorum(1, sender=owner)
    [event] = tx.events.filter(revocations.QuorumChanged)
    assert (event.old_quorum, event.new_quorum) == (GUARDIAN_QUORUM, 1)
    with ape.reverts("revocation_registry: zero quorum"):
        revocations.set_quorum(0, sender=owner)
    with ape.reverts("revocation_registry: quorum above guardian count"):
        revocations.set_quorum(revocations.guardian_count() + 1, sender=owner)


def test_set_treasury__logged_and_non_zero(revocations, owner, treasury, client):
    tx = revocations.set_treasury(client, sender=owner)
    [event] = tx.events.filter(revocations.TreasuryChanged)
    assert (event.old_treasury, event.new_treasury) == (treasury.address, client.address)
    with ape.reverts("revocation_registry: zero address"):
        revocations.set_treasury(ape.utils.ZERO_ADDRESS, sender=owner)


def test_owner_functions__not_owner__revert(revocations, client, guardians):
    for call in (
        lambda: revocations.add_guardian(client, sender=client),
        lambda: revocations.remove_guardian(guardians[0], sender=client),
        lambda: revocations.set_quorum(1, sender=client),
        lambda: revocations.set_treasury(client, sender=client),
    ):
        with ape.reverts("ownable: caller is not the owner"):
            call()


def test_transfer_ownership__new_owner_manages_guardians(revocations, owner, stranger, client):
    # The hand-over path to a timelock or governor (docs/GOVERNANCE.md).
    revocations.transfer_ownership(stranger, sender=owner)
    assert revocations.owner() == stranger.address
    revocations.add_guardian(client, sender=stranger)
    with ape.reverts("ownable: caller is not the owner"):
        revocations.set_quorum(1, sender=owner)


def test_deploy__bad_quorum__reverts(project, owner, registry, treasury, guardians):
    with ape.reverts("revocation_registry: zero quorum"):
        owner.deploy(project.revocation_registry, registry, treasury, list(guardians), 0)
    with ape.reverts("revocation_registry: quorum above guardian count"):
        owner.deploy(project.revocation_registry, registry, treasury, list(guardians), len(guardians) + 1)
    with ape.reverts("revocation_registry: already a guardian"):
        owner.deploy(project.revocation_registry, registry, treasury, [guardians[0], guardians[0]], 1)
