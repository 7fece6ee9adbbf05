"""reputation.vy: challenger reports, the moving-average score and quorum slashing."""

import ape
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trust_params import REPORT_QUORUM, SLASH_BPS

BPS = 10_000


def expected_average(samples):
    """The contract's moving average: the first sample seeds it, then weight 1/8 (RFC 6298)."""
    average = samples[0]
    for sample in samples[1:]:
        average = (average * 7 + sample) // 8
    return average


def test_deploy__parameters_out_of_range__revert(project, owner, registry):
    with ape.reverts("reputation: zero epoch length"):
        owner.deploy(project.reputation, registry, 0, REPORT_QUORUM, SLASH_BPS)
    with ape.reverts("reputation: quorum out of range"):
        owner.deploy(project.reputation, registry, 3600, 0, SLASH_BPS)
    with ape.reverts("reputation: quorum out of range"):
        owner.deploy(project.reputation, registry, 3600, 17, SLASH_BPS)
    with ape.reverts("reputation: slash fraction out of range"):
        owner.deploy(project.reputation, registry, 3600, REPORT_QUORUM, 0)
    with ape.reverts("reputation: slash fraction out of range"):
        owner.deploy(project.reputation, registry, 3600, REPORT_QUORUM, BPS + 1)


def test_report__first_report__seeds_averages_and_logs(reputation, panel, node, start_epoch):
    epoch = start_epoch(reputation)
    tx = reputation.report(node, epoch, 80_000, 35, True, sender=panel[0])

    assert reputation.score(node) == BPS
    assert reputation.throughput_kbps(node) == 80_000
    assert reputation.latency_ms(node) == 35
    assert reputation.report_count(node) == 1
    [event] = tx.events.filter(reputation.ReportPosted)
    assert event.node_id == node
    assert event.epoch == epoch
    assert event.challenger == panel[0].address
    assert (event.throughput_kbps, event.latency_ms, event.passed, event.score) == (80_000, 35, True, BPS)


def test_report__over_epochs__moves_the_moving_average(reputation, panel, node, start_epoch):
    reports = [(True, 90_000, 20), (False, 1_000, 900), (True, 50_000, 40), (True, 70_000, 30)]
    for passed, throughput, latency in reports:
        epoch = start_epoch(reputation)
        tx = reputation.report(node, epoch, throughput, latency, passed, sender=panel[0])
        assert not list(tx.events.filter(reputation.QuorumSlashed))

    assert reputation.score(node) == expected_average([BPS if passed else 0 for passed, _, _ in reports])
    assert reputation.throughput_kbps(node) == expected_average([t for _, t, _ in reports])
    assert reputation.latency_ms(node) == expected_average([latency for _, _, latency in reports])
    assert reputation.report_count(node) == len(reports)


def test_report__largest_measurements__stored_without_loss(reputation, panel, node, start_epoch):
    # The averages share one storage word with the score and report count: the widest values must
    # come back intact and leave the neighbouring fields alone.
    top = 2**64 - 1
    for member, passed in ((panel[0], True), (panel[1], False)):
        reputation.report(node, start_epoch(reputation), top, top, passed, sender=member)
    assert reputation.throughput_kbps(node) == top
    assert reputation.latency_ms(node) == top
    assert reputation.score(node) == expected_average([BPS, 0])
    assert reputation.report_count(node) == 2


def test_report__measurement_out_of_range__reverts(reputation, panel, node, start_epoch):
    epoch = start_epoch(reputation)
    with ape.reverts("reputation: measurement out of range"):
        reputation.report(node, epoch, 2**64, 1, True, sender=panel[0])
    with ape.reverts("reputation: measurement out of range"):
        reputation.report(node, epoch, 1, 2**64, True, sender=panel[0])


def test_report__non_challenger__reverts(reputation, client, node, start_epoch):
    epoch = start_epoch(reputation)
    with ape.reverts("reputation: not a challenger"):
        reputation.report(node, epoch, 1, 1, False, sender=client)


def test_report__unbonding_challenger__reverts(reputation, registry, panel, node, start_epoch):
    registry.request_challenger_unbonding(sender=panel[0])
    epoch = start_epoch(reputation)
    with ape.reverts("reputation: not a challenger"):
        reputation.report(node, epoch, 1, 1, False, sender=panel[0])


def test_report__own_node__reverts(reputation, operator, stake_challenger, node, start_epoch):
    stake_challenger(operator)
    epoch = start_epoch(reputation)
    with ape.reverts("reputation: own node"):
        reputation.report(node, epoch, 1, 1, True, sender=operator)


def test_report__unknown_node__reverts(reputation, panel, start_epoch):
    epoch = start_epoch(reputation)
    with ape.reverts("reputation: unknown node"):
        reputation.report(b"\x42" * 32, epoch, 1, 1, False, sender=panel[0])


def test_report__twice_in_one_epoch__reverts(reputation, panel, node, start_epoch):
    epoch = start_epoch(reputation)
    reputation.report(node, epoch, 1_000, 10, True, sender=panel[0])
    with ape.reverts("reputation: already reported"):
        reputation.report(node, epoch, 1_000, 10, False, sender=panel[0])
    # Another challenger in the same epoch, and the same challenger in the next one, are fine.
    reputation.report(node, epoch, 1_000, 10, True, sender=panel[1])
    reputation.report(node, start_epoch(reputation), 1_000, 10, True, sender=panel[0])
    assert reputation.report_count(node) == 3


@pytest.mark.parametrize("offset", [-1, 1])
def test_report__wrong_epoch__reverts(reputation, panel, node, start_epoch, offset):
    epoch = start_epoch(reputation)
    with ape.reverts("reputation: wrong epoch"):
        reputation.report(node, epoch + offset, 1, 1, True, sender=panel[0])


def test_report__failures_below_quorum__do_not_slash(reputation, registry, panel, node, start_epoch):
    stake = registry.node_stake(node)
    epoch = start_epoch(reputation)
    for member in panel[: REPORT_QUORUM - 1]:
        reputation.report(node, epoch, 1, 1, False, sender=member)
    # A pass does not count towards the failure quorum.
    tx = reputation.report(node, epoch, 1, 1, True, sender=panel[REPORT_QUORUM - 1])

    assert registry.node_stake(node) == stake
    assert not list(tx.events.filter(reputation.QuorumSlashed))
    assert len(reputation.failure_reporters(node, epoch)) == REPORT_QUORUM - 1


def test_report__failure_quorum__slashes_and_splits_bounty(reputation, registry, token, panel, node, start_epoch):
    stake = registry.node_stake(node)
    reporters = panel[:REPORT_QUORUM]
    before = [token.balanceOf(member) for member in reporters]
    epoch = start_epoch(reputation)
    for member in reporters[:-1]:
        reputation.report(node, epoch, 10, 2_000, False, sender=member)
    tx = reputation.report(node, epoch, 10, 2_000, False, sender=reporters[-1])

    taken = stake * SLASH_BPS // BPS
    share = taken // REPORT_QUORUM
    expected = [share] * (REPORT_QUORUM - 1) + [taken - share * (REPORT_QUORUM - 1)]
    assert registry.node_stake(node) == stake - taken
    assert [token.balanceOf(m) - b for m, b in zip(reporters, before)] == expected
    assert token.balanceOf(reputation) == 0

    [slashed] = tx.events.filter(reputation.QuorumSlashed)
    assert (slashed.node_id, slashed.epoch, slashed.amount) == (node, epoch, taken)
    assert list(slashed.reporters) == [m.address for m in reporters]
    bounties = list(tx.events.filter(reputation.BountyPaid))
    assert [(b.challenger, b.amount) for b in bounties] == list(zip([m.address for m in reporters], expected))
    assert all(b.node_id == node and b.epoch == epoch for b in bounties)
    [registry_event] = tx.events.filter(registry.NodeSlashed)
    assert registry_event.amount == taken


def test_report__failures_past_quorum__slash_once_per_epoch(reputation, registry, panel, node, start_epoch):
    epoch = start_epoch(reputation)
    for member in panel[:REPORT_QUORUM]:
        reputation.report(node, epoch, 1, 1, False, sender=member)
    stake_after_slash = registry.node_stake(node)
    tx = reputation.report(node, epoch, 1, 1, False, sender=panel[REPORT_QUORUM])

    assert registry.node_stake(node) == stake_after_slash
    assert not list(tx.events.filter(reputation.QuorumSlashed))
    assert len(reputation.failure_reporters(node, epoch)) == REPORT_QUORUM
    assert reputation.report_count(node) == REPORT_QUORUM + 1


def test_report__quorum_in_successive_epochs__slashes_the_remaining_stake_each_time(
    reputation, registry, panel, node, start_epoch
):
    stake = registry.node_stake(node)
    for _ in range(2):
        epoch = start_epoch(reputation)
        for member in panel[:REPORT_QUORUM]:
            reputation.report(node, epoch, 1, 1, False, sender=member)
        stake -= stake * SLASH_BPS // BPS
        assert registry.node_stake(node) == stake


def test_report__unbonding_node__still_reported_and_slashed(reputation, registry, operator, panel, node, start_epoch):
    # Stake stays slashable while it unbonds, so a node cannot dodge a failing epoch by leaving.
    registry.request_unbonding(node, sender=operator)
    stake = registry.node_stake(node)
    epoch = start_epoch(reputation)
    for member in panel[:REPORT_QUORUM]:
        reputation.report(node, epoch, 1, 1, False, sender=member)
    assert registry.node_stake(node) == stake - stake * SLASH_BPS // BPS


def test_report__slashing_not_authorised__reverts(project, owner, registry, panel, node, start_epoch):
    # Deployed but never made a slasher: the registry refuses the slash, so the quorum report fails.
    rogue = owner.deploy(project.reputation, registry, 3_600, 1, SLASH_BPS)
    epoch = start_epoch(rogue)
    with ape.reverts("node_registry: not a slasher"):
        rogue.report(node, epoch, 1, 1, False, sender=panel[0])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    extra_stake=st.integers(min_value=0, max_value=10**23),
    slash_bps=st.integers(min_value=1, max_value=BPS),
    quorum=st.integers(min_value=1, max_value=REPORT_QUORUM),
    rounds=st.integers(min_value=1, max_value=3),
)
def test_report__any_parameters__slash_never_exceeds_stake(
    chain, registry, token, deploy_reputation, panel, operator, register_node, start_epoch, extra_stake, slash_bps, quorum, rounds
):
    with chain.isolate():
        contract = deploy_reputation(quorum=quorum, slash_bps=slash_bps)
        node_id = register_node(operator, stake=registry.min_node_stake() + extra_stake)
        stake = registry.node_stake(node_id)
        paid_out = 0
        for _ in range(rounds):
            epoch = start_epoch(contract)
            before = sum(token.balanceOf(member) for member in panel[:quorum])
            for member in panel[:quorum]:
                tx = contract.report(node_id, epoch, 1, 1, False, sender=member)
            [slashed] = tx.events.filter(contract.QuorumSlashed)
            remaining = registry.node_stake(node_id)
            assert slashed.amount == stake * slash_bps // BPS <= stake
            assert remaining == stake - slashed.amount
            assert sum(token.balanceOf(member) for member in panel[:quorum]) - before == slashed.amount
            paid_out += slashed.amount
            stake = remaining
        assert token.balanceOf(contract) == 0
        assert paid_out + registry.node_stake(node_id) == registry.min_node_stake() + extra_stake


def test_report__key_registered_again__starts_clean_and_old_failures_do_not_count(
    reputation, registry, token, operator, stranger, panel, register_node, start_epoch, chain
):
    # Outside review: failure reports were keyed by node id, so after a node withdrew and the same
    # WireGuard key registered again in the same epoch (by anyone), the earlier registration's
    # failure reports counted towards slashing the new one. They are keyed by registration now.
    key = bytes(range(1, 33))
    node_id = register_node(wg_key=key)
    reputation.report(node_id, start_epoch(reputation), 50_000, 20, True, sender=panel[3])
    tx = registry.request_unbonding(node_id, sender=operator)
    chain.pending_timestamp = tx.decode_logs(registry.NodeUnbondingRequested)[0].unbond_at
    epoch = start_epoch(reputation)
    for member in panel[: REPORT_QUORUM - 1]:
        reputation.report(node_id, epoch, 1, 1, False, sender=member)
    assert len(reputation.failure_reporters(node_id, epoch)) == REPORT_QUORUM - 1
    registry.withdraw_stake(node_id, sender=operator)

    assert register_node(sender=stranger, wg_key=key) == node_id
    assert reputation.current_epoch() == epoch
    stake = registry.node_stake(node_id)
    assert (reputation.score(node_id), reputation.report_count(node_id)) == (0, 0)
    assert list(reputation.failure_reporters(node_id, epoch)) == []
    assert reputation.epoch_service(node_id, epoch) == (0, 0)

    # The earlier reporters may report on the new registration in the same epoch, and the quorum
    # counts only failures of this registration: one short of it, nothing is slashed.
    tx = reputation.report(node_id, epoch, 1, 1, False, sender=panel[REPORT_QUORUM - 1])
    assert not list(tx.events.filter(reputation.QuorumSlashed))
    for member in panel[: REPORT_QUORUM - 2]:
        reputation.report(node_id, epoch, 1, 1, False, sender=member)
    assert registry.node_stake(node_id) == stake
    assert reputation.report_count(node_id) == REPORT_QUORUM - 1
    # The quorum's last report, from the registration's own reporters, slashes it.
    tx = reputation.report(node_id, epoch, 1, 1, False, sender=panel[REPORT_QUORUM - 2])
    [slashed] = tx.events.filter(reputation.QuorumSlashed)
    assert slashed.amount == stake * SLASH_BPS // BPS
    assert registry.node_stake(node_id) == stake - slashed.amount


def test_report__node_withdrew__unknown_node(reputation, registry, operator, panel, node, start_epoch, chain):
    tx = registry.request_unbonding(node, sender=operator)
    chain.pending_timestamp = tx.decode_logs(registry.NodeUnbondingRequested)[0].unbond_at
    registry.withdraw_stake(node, sender=operator)
    with ape.reverts("reputation: unknown node"):
        reputation.report(node, start_epoch(reputation), 1, 1, False, sender=panel[0])


def test_report__challenger_slashed_below_minimum__reverts(reputation, registry, slasher, panel, node, start_epoch):
    # A challenger's stake is what makes lying cost something: below the minimum it may not report.
    registry.slash_challenger(panel[0], registry.challenger_stake(panel[0]), slasher, sender=slasher)
    with ape.reverts("reputation: not a challenger"):
        reputation.report(node, start_epoch(reputation), 1, 1, False, sender=panel[0])


def test_report__with_transcript_hash__logs_it_beside_the_report(reputation, panel, node, start_epoch):
    epoch = start_epoch(reputation)
    digest = bytes(range(32))
    tx = reputation.report(node, epoch, 40_000, 30, False, digest, sender=panel[0])
    [posted] = tx.events.filter(reputation.ReportPosted)
    assert (posted.passed, posted.throughput_kbps) == (False, 40_000)
    [committed] = tx.events.filter(reputation.ReportTranscript)
    assert (bytes(committed.node_id), committed.epoch, committed.challenger) == (node, epoch, panel[0].address)
    assert bytes(committed.transcript_hash) == digest
    # Without one (the five-argument form) nothing more is logged.
    tx = reputation.report(node, epoch, 40_000, 30, True, sender=panel[1])
    assert not list(tx.events.filter(reputation.ReportTranscript))
