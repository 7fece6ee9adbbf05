"""reputation.vy: challenger reports, the score over epoch medians, and slashing a failure majority after the epoch."""

import ape
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trust_params import REPORT_QUORUM, REPORTS_PER_NODE, SLASH_BPS

BPS = 10_000
#: reputation.vy's MAX_SAMPLES: reports of one epoch whose measurements are kept.
MAX_SAMPLES = 32


def expected_average(samples):
    """The contract's moving average over epochs: the first epoch's median seeds it, then weight 1/8 (RFC 6298)."""
    average = samples[0]
    for sample in samples[1:]:
        average = (average * 7 + sample) // 8
    return average


def test_deploy__parameters_out_of_range__revert(project, owner, registry):
    with ape.reverts("reputation: zero epoch length"):
        owner.deploy(project.reputation, registry, 0, REPORT_QUORUM, SLASH_BPS, REPORTS_PER_NODE)
    with ape.reverts("reputation: quorum out of range"):
        owner.deploy(project.reputation, registry, 3600, 0, SLASH_BPS, REPORTS_PER_NODE)
    with ape.reverts("reputation: quorum out of range"):
        owner.deploy(project.reputation, registry, 3600, 17, SLASH_BPS, REPORTS_PER_NODE)
    with ape.reverts("reputation: slash fraction out of range"):
        owner.deploy(project.reputation, registry, 3600, REPORT_QUORUM, 0, REPORTS_PER_NODE)
    with ape.reverts("reputation: slash fraction out of range"):
        owner.deploy(project.reputation, registry, 3600, REPORT_QUORUM, BPS + 1, REPORTS_PER_NODE)


def test_deploy__unbonding_shorter_than_two_epochs__reverts(project, owner, registry):
    # A node must not be able to withdraw between a failing epoch and the end of its slash window.
    delay = registry.unbonding_delay()
    with ape.reverts("reputation: unbonding shorter than two epochs"):
        owner.deploy(project.reputation, registry, delay // 2 + 1, REPORT_QUORUM, SLASH_BPS, REPORTS_PER_NODE)
    assert owner.deploy(project.reputation, registry, delay // 2, REPORT_QUORUM, SLASH_BPS, REPORTS_PER_NODE).epoch_length() == delay // 2


def lower_median(values):
    """The contract's median: the lower middle of the sorted values."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def test_report__first_epoch__scored_once_the_epoch_closes(reputation, panel, node, start_epoch):
    epoch = start_epoch(reputation)
    tx = reputation.report(node, epoch, 80_000, 35, True, sender=panel[0])

    # While the epoch is open its reports move nothing (the median is not known yet)...
    assert (reputation.score(node), reputation.throughput_kbps(node), reputation.report_count(node)) == (0, 0, 0)
    assert reputation.epoch_median(node, epoch) == (True, 80_000, 35, 1)
    [event] = tx.events.filter(reputation.ReportPosted)
    assert event.node_id == node
    assert event.epoch == epoch
    assert event.challenger == panel[0].address
    assert (event.throughput_kbps, event.latency_ms, event.passed, event.score) == (80_000, 35, True, 0)
    # ...and once it is over, its medians seed the averages (read before any later report folds them).
    start_epoch(reputation)
    assert reputation.score(node) == BPS
    assert reputation.throughput_kbps(node) == 80_000
    assert reputation.latency_ms(node) == 35
    assert reputation.report_count(node) == 1


def test_report__over_epochs__moving_average_of_epoch_medians(reputation, crowd, node, start_epoch):
    # Each epoch: (passed, kbit/s, ms) by three to five challengers. The score moves by the epoch's
    # median verdict, not by each report: the last epoch's single failure does not count.
    epochs = [
        [(True, 90_000, 20), (True, 70_000, 30), (False, 1_000, 900)],
        [(False, 1_000, 900), (False, 2_000, 800), (True, 60_000, 25), (False, 10, 2_000)],
        [(True, 50_000, 40), (True, 55_000, 35), (True, 45_000, 45), (False, 10, 9_000), (True, 52_000, 38)],
    ]
    for reports in epochs:
        epoch = start_epoch(reputation)
        for member, (passed, throughput, latency) in zip(crowd, reports):
            reputation.report(node, epoch, throughput, latency, passed, sender=member)
    start_epoch(reputation)

    verdicts = [BPS if 2 * [p for p, _, _ in r].count(False) < len(r) else 0 for r in epochs]
    assert verdicts == [BPS, 0, BPS]
    assert reputation.score(node) == expected_average(verdicts)
    assert reputation.throughput_kbps(node) == expected_average([lower_median([t for _, t, _ in r]) for r in epochs])
    assert reputation.latency_ms(node) == expected_average([lower_median([x for _, _, x in r]) for r in epochs])
    assert reputation.report_count(node) == sum(len(r) for r in epochs)


def test_score__one_lying_challenger_among_three__moves_nothing(reputation, panel, node, start_epoch):
    # Two honest challengers see 50 Mbit/s at 20 ms every epoch; the third lies (a failure at
    # 1 kbit/s and 5 s) in the second and third epochs: the score and the figures stay the honest ones.
    for liar in (False, True, True):
        epoch = start_epoch(reputation)
        reputation.report(node, epoch, 50_000, 20, True, sender=panel[0])
        reputation.report(node, epoch, 50_000, 20, True, sender=panel[1])
        if liar:
            reputation.report(node, epoch, 1, 5_000, False, sender=panel[2])
        else:
            reputation.report(node, epoch, 50_000, 20, True, sender=panel[2])
    start_epoch(reputation)
    assert (reputation.score(node), reputation.throughput_kbps(node), reputation.latency_ms(node)) == (BPS, 50_000, 20)
    assert reputation.report_count(node) == 9

    # Two liars of three are the median: the next epoch's failure moves the score by an eighth.
    epoch = reputation.current_epoch()
    reputation.report(node, epoch, 50_000, 20, True, sender=panel[0])
    reputation.report(node, epoch, 1, 5_000, False, sender=panel[1])
    reputation.report(node, epoch, 1, 5_000, False, sender=panel[2])
    start_epoch(reputation)
    assert reputation.score(node) == expected_average([BPS, 0])
    assert reputation.throughput_kbps(node) == expected_average([50_000, 1])


def test_score__lying_minority_cannot_lift_a_failing_node(reputation, panel, node, start_epoch):
    epoch = start_epoch(reputation)
    reputation.report(node, epoch, 10, 3_000, False, sender=panel[0])
    reputation.report(node, epoch, 90_000_000, 1, True, sender=panel[1])  # the node's friend
    reputation.report(node, epoch, 12, 2_800, False, sender=panel[2])
    start_epoch(reputation)
    assert (reputation.score(node), reputation.throughput_kbps(node), reputation.latency_ms(node)) == (0, 12, 2_800)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples=st.lists(st.tuples(st.booleans(), st.integers(0, 2**40 - 1), st.integers(0, 2**24 - 1)),
                        min_size=1, max_size=10))
def test_epoch_median__any_reports__lower_medians_of_the_samples(chain, reputation, crowd, node, start_epoch, samples):
    with chain.isolate():
        epoch = start_epoch(reputation)
        for member, (passed, throughput, latency) in zip(crowd, samples):
            reputation.report(node, epoch, throughput, latency, passed, sender=member)
        failures = [passed for passed, _, _ in samples].count(False)
        expected = (2 * failures < len(samples), lower_median([t for _, t, _ in samples]),
                    lower_median([x for _, _, x in samples]), len(samples))
        assert reputation.epoch_median(node, epoch) == expected
        start_epoch(reputation)
        # The view folds the closed epoch; the next report folds it on chain: the same figures.
        seen = (reputation.score(node), reputation.throughput_kbps(node), reputation.latency_ms(node))
        assert seen == (BPS if expected[0] else 0, expected[1], expected[2])
        tx = reputation.report(node, reputation.current_epoch(), 1, 1, True, sender=crowd[0])
        assert tx.events.filter(reputation.ReportPosted)[0].score == seen[0]
        assert (reputation.score(node), reputation.throughput_kbps(node), reputation.latency_ms(node)) == seen


def test_epoch_median__reports_beyond_max_samples__tallied_not_sampled(
    accounts, chain, reputation, crowd, stake_challenger, node, start_epoch
):
    # The first 32 reports keep their measurement; more still count in the tally (the verdict).
    extra = [accounts.generate_test_account() for _ in range(MAX_SAMPLES + 3 - len(crowd))]
    for account in extra:
        chain.set_balance(account, 10**21)
    members = [*crowd, *(stake_challenger(account) for account in extra)]
    epoch = start_epoch(reputation)
    for i, member in enumerate(members[:MAX_SAMPLES]):
        reputation.report(node, epoch, 1_000 + i, 100 + i, True, sender=member)
    for member in members[MAX_SAMPLES:]:
        reputation.report(node, epoch, 1, 9_000, False, sender=member)
    assert reputation.epoch_median(node, epoch) == (True, 1_000 + 15, 100 + 15, MAX_SAMPLES + 3)
    assert reputation.epoch_tally(node, epoch) == (MAX_SAMPLES + 3, 3, False)


def test_report__gap_epochs__not_counted(reputation, panel, node, start_epoch):
    # Epochs without reports are not failures: only reported epochs are folded.
    reputation.report(node, start_epoch(reputation), 40_000, 30, True, sender=panel[0])
    for _ in range(3):
        start_epoch(reputation)
    reputation.report(node, start_epoch(reputation), 60_000, 10, True, sender=panel[0])
    start_epoch(reputation)
    assert reputation.score(node) == BPS
    assert reputation.throughput_kbps(node) == expected_average([40_000, 60_000])
    assert reputation.report_count(node) == 2


def test_report__largest_measurements__stored_without_loss(reputation, panel, node, start_epoch):
    # The averages share one storage word with the score, report count and open epoch, and the
    # samples four to a word: the widest values must come back intact and leave their neighbours alone.
    top_kbps, top_ms = 2**40 - 1, 2**24 - 1
    for member, passed in ((panel[0], True), (panel[1], False)):
        epoch = start_epoch(reputation)
        reputation.report(node, epoch, top_kbps, top_ms, passed, sender=member)
        reputation.report(node, epoch, top_kbps, top_ms, passed, sender=panel[2])
    start_epoch(reputation)
    assert reputation.throughput_kbps(node) == top_kbps
    assert reputation.latency_ms(node) == top_ms
    assert reputation.score(node) == expected_average([BPS, 0])
    assert reputation.report_count(node) == 4


def test_report__measurement_out_of_range__reverts(reputation, panel, node, start_epoch):
    epoch = start_epoch(reputation)
    with ape.reverts("reputation: measurement out of range"):
        reputation.report(node, epoch, 2**40, 1, True, sender=panel[0])
    with ape.reverts("reputation: measurement out of range"):
        reputation.report(node, epoch, 1, 2**24, True, sender=panel[0])


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
    assert reputation.report_count(node) == 2  # the closed epoch's; the open one's once it closes


@pytest.mark.parametrize("offset", [-1, 1])
def test_report__wrong_epoch__reverts(reputation, panel, node, start_epoch, offset):
    epoch = start_epoch(reputation)
    with ape.reverts("reputation: wrong epoch"):
        reputation.report(node, epoch + offset, 1, 1, True, sender=panel[0])


def post(contract, node, epoch, verdicts, members):
    """The first len(verdicts) members in turn report the node passed (True) or failed (False)."""
    for passed, member in zip(verdicts, members[: len(verdicts)], strict=True):
        if passed:
            contract.report(node, epoch, 50_000, 20, True, sender=member)
        else:
            contract.report(node, epoch, 10, 2_000, False, sender=member)


def after_slash(stake):
    """What a slash leaves of `stake`."""
    return stake - stake * SLASH_BPS // BPS


@pytest.fixture
def reported_epoch(start_epoch):
    """Factory: start an epoch, post `verdicts` on a node (default: REPORT_QUORUM failures), then
    move into the next epoch, the slash window; returns the epoch reported."""

    def run(contract, node, members, verdicts=(False,) * REPORT_QUORUM):
        epoch = start_epoch(contract)
        post(contract, node, epoch, verdicts, members)
        start_epoch(contract)
        return epoch

    return run


def test_report__failure_quorum__no_longer_slashes_in_the_report(reputation, registry, panel, node, start_epoch):
    # Issue 14: the report completing a quorum used to slash; now it only adds to the epoch's tally.
    stake = registry.node_stake(node)
    epoch = start_epoch(reputation)
    post(reputation, node, epoch, [False] * (REPORT_QUORUM - 1), panel)
    tx = reputation.report(node, epoch, 10, 2_000, False, sender=panel[REPORT_QUORUM - 1])

    assert not list(tx.events.filter(reputation.QuorumSlashed))
    assert registry.node_stake(node) == stake
    assert reputation.epoch_tally(node, epoch) == (REPORT_QUORUM, REPORT_QUORUM, False)
    assert list(reputation.failure_reporters(node, epoch)) == [m.address for m in panel[:REPORT_QUORUM]]


@pytest.mark.parametrize(
    "verdicts",
    [
        # Measurement noise: 3 of an honest node's 10 challenges failed, spread over the epoch.
        [True, False, True, True, True, False, True, True, False, True],
        # A lying minority: 3 challengers report failures first, the other 7 measure a good node.
        [False, False, False] + [True] * 7,
    ],
    ids=["honest_noise", "lying_minority"],
)
def test_slash_epoch__quorum_of_failures_but_no_majority__reverts(
    reputation, registry, stranger, crowd, node, reported_epoch, verdicts
):
    stake = registry.node_stake(node)
    epoch = reported_epoch(reputation, node, crowd, verdicts)

    assert reputation.epoch_tally(node, epoch) == (10, 3, False)
    assert reputation.slash_refusal(node, epoch) == "reputation: no failure majority"
    with ape.reverts("reputation: no failure majority"):
        reputation.slash_epoch(node, epoch, sender=stranger)
    assert registry.node_stake(node) == stake


def test_slash_epoch__failure_majority__slashes_and_splits_bounty(
    reputation, registry, token, stranger, crowd, node, reported_epoch
):
    # 6 failures of 10 reports; the first REPORT_QUORUM failure reporters (crowd 0, 2, 4) are paid,
    # whoever sends the slash (here a stranger, paid nothing).
    verdicts = [False, True, False, True, False, False, True, False, False, True]
    reporters = [m for m, passed in zip(crowd, verdicts) if not passed][:REPORT_QUORUM]
    stake = registry.node_stake(node)
    epoch = reported_epoch(reputation, node, crowd, verdicts)
    assert reputation.slash_refusal(node, epoch) == ""
    before = [token.balanceOf(member) for member in crowd]
    stranger_before = token.balanceOf(stranger)
    tx = reputation.slash_epoch(node, epoch, sender=stranger)

    taken = stake * SLASH_BPS // BPS
    share = taken // REPORT_QUORUM
    expected = [share] * (REPORT_QUORUM - 1) + [taken - share * (REPORT_QUORUM - 1)]
    assert registry.node_stake(node) == stake - taken
    gained = {m.address: token.balanceOf(m) - b for m, b in zip(crowd, before)}
    assert [gained[m.address] for m in reporters] == expected
    assert sum(gained.values()) == taken
    assert token.balanceOf(stranger) == stranger_before
    assert token.balanceOf(reputation) == 0
    assert reputation.epoch_tally(node, epoch) == (10, 6, True)

    [slashed] = tx.events.filter(reputation.QuorumSlashed)
    assert (slashed.node_id, slashed.epoch, slashed.amount) == (node, epoch, taken)
    assert (slashed.reports, slashed.failures) == (10, 6)
    assert list(slashed.reporters) == [m.address for m in reporters]
    bounties = list(tx.events.filter(reputation.BountyPaid))
    assert [(b.challenger, b.amount) for b in bounties] == list(zip([m.address for m in reporters], expected))
    assert all(b.node_id == node and b.epoch == epoch for b in bounties)
    [registry_event] = tx.events.filter(registry.NodeSlashed)
    assert registry_event.amount == taken


def test_slash_epoch__exactly_half_failed__slashes(reputation, registry, stranger, crowd, node, reported_epoch):
    # The lower median of an even count is the worse half's top: 5 of 10 failed is a majority.
    stake = registry.node_stake(node)
    epoch = reported_epoch(reputation, node, crowd, [True, False] * 5)
    reputation.slash_epoch(node, epoch, sender=stranger)
    assert registry.node_stake(node) == after_slash(stake)


def test_slash_epoch__every_report_failed_but_below_quorum__reverts(
    reputation, stranger, panel, node, register_node, reported_epoch
):
    unreported = register_node()
    epoch = reported_epoch(reputation, node, panel, [False] * (REPORT_QUORUM - 1))
    # Too few failures, or no report at all, are refused the same way.
    for node_id in (node, unreported):
        assert reputation.slash_refusal(node_id, epoch) == "reputation: failure quorum not reached"
        with ape.reverts("reputation: failure quorum not reached"):
            reputation.slash_epoch(node_id, epoch, sender=stranger)


def test_slash_epoch__twice__reverts(reputation, registry, stranger, panel, node, reported_epoch):
    epoch = reported_epoch(reputation, node, panel)
    reputation.slash_epoch(node, epoch, sender=stranger)
    stake = registry.node_stake(node)
    with ape.reverts("reputation: already slashed"):
        reputation.slash_epoch(node, epoch, sender=panel[0])
    assert registry.node_stake(node) == stake
    assert reputation.slash_refusal(node, epoch) == "reputation: already slashed"


def test_slash_epoch__epoch_not_over__reverts(reputation, stranger, panel, node, start_epoch):
    epoch = start_epoch(reputation)
    post(reputation, node, epoch, [False] * REPORT_QUORUM, panel)
    for too_early in (epoch, epoch + 1):
        with ape.reverts("reputation: epoch not finished"):
            reputation.slash_epoch(node, too_early, sender=stranger)
    assert reputation.slash_refusal(node, epoch) == "reputation: epoch not finished"


def test_slash_epoch__after_the_next_epoch__reverts(
    reputation, registry, stranger, panel, node, reported_epoch, start_epoch
):
    stake = registry.node_stake(node)
    epoch = reported_epoch(reputation, node, panel)
    start_epoch(reputation)
    with ape.reverts("reputation: slash window closed"):
        reputation.slash_epoch(node, epoch, sender=stranger)
    assert registry.node_stake(node) == stake


def test_slash_epoch__unknown_node__reverts(reputation, stranger, start_epoch):
    epoch = start_epoch(reputation)
    start_epoch(reputation)
    with ape.reverts("reputation: unknown node"):
        reputation.slash_epoch(b"\x42" * 32, epoch, sender=stranger)


def test_slash_epoch__quorum_in_successive_epochs__slashes_the_remaining_stake_each_time(
    reputation, registry, stranger, panel, node, start_epoch
):
    stake = registry.node_stake(node)
    epoch = start_epoch(reputation)
    for _ in range(2):
        post(reputation, node, epoch, [False] * REPORT_QUORUM, panel)
        # The next epoch's reports and the previous epoch's slash share the same epoch.
        epoch = start_epoch(reputation)
        reputation.slash_epoch(node, epoch - 1, sender=stranger)
        stake -= stake * SLASH_BPS // BPS
        assert registry.node_stake(node) == stake


def test_slash_epoch__unbonding_node__still_slashed(
    reputation, registry, operator, stranger, panel, node, reported_epoch
):
    # Stake stays slashable while it unbonds (two epochs at least: the constructor checks the
    # registry's delay), so a node cannot dodge a failing epoch by leaving.
    registry.request_unbonding(node, sender=operator)
    stake = registry.node_stake(node)
    epoch = reported_epoch(reputation, node, panel)
    reputation.slash_epoch(node, epoch, sender=stranger)
    assert registry.node_stake(node) == after_slash(stake)


def test_slash_epoch__node_slashed_below_minimum__still_reported_and_slashed(
    reputation, registry, token, slasher, stranger, panel, node, reported_epoch, start_epoch
):
    # Below the minimum a node takes no new channels, but what is left of its stake still answers
    # for a failing epoch; with nothing left, the slash is logged with amount 0 and pays nobody.
    registry.slash(node, registry.node_stake(node) // 2, slasher, sender=slasher)
    assert not registry.is_active(node)
    stake = registry.node_stake(node)
    epoch = reported_epoch(reputation, node, panel)
    reputation.slash_epoch(node, epoch, sender=stranger)
    assert registry.node_stake(node) == after_slash(stake)

    registry.slash(node, registry.node_stake(node), slasher, sender=slasher)
    epoch += 1  # the epoch the first slash was sent in: it is reported on too
    post(reputation, node, epoch, [False] * REPORT_QUORUM, panel)
    start_epoch(reputation)
    before = [token.balanceOf(member) for member in panel]
    tx = reputation.slash_epoch(node, epoch, sender=stranger)
    [slashed] = tx.events.filter(reputation.QuorumSlashed)
    assert slashed.amount == 0
    assert not list(tx.events.filter(reputation.BountyPaid))
    assert [token.balanceOf(member) for member in panel] == before
    assert reputation.epoch_tally(node, epoch) == (REPORT_QUORUM, REPORT_QUORUM, True)


def test_slash_epoch__slashing_not_authorised__reverts(project, owner, registry, stranger, panel, node, start_epoch):
    # Deployed but never made a slasher: the registry refuses the slash, so slash_epoch fails.
    rogue = owner.deploy(project.reputation, registry, 3_600, 1, SLASH_BPS, REPORTS_PER_NODE)
    epoch = start_epoch(rogue)
    rogue.report(node, epoch, 1, 1, False, sender=panel[0])
    start_epoch(rogue)
    with ape.reverts("node_registry: not a slasher"):
        rogue.slash_epoch(node, epoch, sender=stranger)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    extra_stake=st.integers(min_value=0, max_value=10**23),
    slash_bps=st.integers(min_value=1, max_value=BPS),
    quorum=st.integers(min_value=1, max_value=REPORT_QUORUM),
    rounds=st.integers(min_value=1, max_value=3),
)
def test_slash_epoch__any_parameters__slash_never_exceeds_stake(
    chain, registry, token, deploy_reputation, panel, operator, stranger, register_node, start_epoch, extra_stake,
    slash_bps, quorum, rounds
):
    with chain.isolate():
        contract = deploy_reputation(quorum=quorum, slash_bps=slash_bps)
        node_id = register_node(operator, stake=registry.min_node_stake() + extra_stake)
        stake = registry.node_stake(node_id)
        paid_out = 0
        epoch = start_epoch(contract)
        for _ in range(rounds):
            post(contract, node_id, epoch, [False] * quorum, panel[:quorum])
            epoch = start_epoch(contract)
            before = sum(token.balanceOf(member) for member in panel[:quorum])
            tx = contract.slash_epoch(node_id, epoch - 1, sender=stranger)
            [slashed] = tx.events.filter(contract.QuorumSlashed)
            remaining = registry.node_stake(node_id)
            assert slashed.amount == stake * slash_bps // BPS <= stake
            assert remaining == stake - slashed.amount
            assert sum(token.balanceOf(member) for member in panel[:quorum]) - before == slashed.amount
            paid_out += slashed.amount
            stake = remaining
        assert token.balanceOf(contract) == 0
        assert paid_out + registry.node_stake(node_id) == registry.min_node_stake() + extra_stake


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(verdicts=st.lists(st.booleans(), min_size=1, max_size=10), quorum=st.integers(min_value=1, max_value=4))
def test_slash_epoch__any_reports__slashed_iff_quorum_and_half_failed(
    chain, registry, deploy_reputation, crowd, node, stranger, start_epoch, verdicts, quorum
):
    failures = verdicts.count(False)
    majority = failures >= quorum and 2 * failures >= len(verdicts)
    with chain.isolate():
        contract = deploy_reputation(quorum=quorum)
        stake = registry.node_stake(node)
        epoch = start_epoch(contract)
        post(contract, node, epoch, verdicts, crowd[: len(verdicts)])
        start_epoch(contract)
        assert contract.epoch_tally(node, epoch) == (len(verdicts), failures, False)
        if majority:
            contract.slash_epoch(node, epoch, sender=stranger)
            assert registry.node_stake(node) == after_slash(stake)
        else:
            reason = "reputation: no failure majority"
            if failures < quorum:
                reason = "reputation: failure quorum not reached"
            assert contract.slash_refusal(node, epoch) == reason
            with ape.reverts(reason):
                contract.slash_epoch(node, epoch, sender=stranger)
            assert registry.node_stake(node) == stake


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
    post(reputation, node_id, epoch, [False] * (REPORT_QUORUM - 1), panel)
    assert len(reputation.failure_reporters(node_id, epoch)) == REPORT_QUORUM - 1
    registry.withdraw_stake(node_id, sender=operator)

    assert register_node(sender=stranger, wg_key=key) == node_id
    assert reputation.current_epoch() == epoch
    stake = registry.node_stake(node_id)
    assert (reputation.score(node_id), reputation.report_count(node_id)) == (0, 0)
    assert list(reputation.failure_reporters(node_id, epoch)) == []
    assert reputation.epoch_tally(node_id, epoch) == (0, 0, False)
    assert reputation.epoch_service(node_id, epoch) == (0, 0)

    # The earlier reporters may report on the new registration in the same epoch, and only this
    # registration's failures count: after one more failure it has 1, not REPORT_QUORUM.
    reputation.report(node_id, epoch, 1, 1, False, sender=panel[REPORT_QUORUM - 1])
    assert reputation.epoch_tally(node_id, epoch) == (1, 1, False)
    post(reputation, node_id, epoch, [False] * (REPORT_QUORUM - 1), panel)
    start_epoch(reputation)
    assert reputation.report_count(node_id) == REPORT_QUORUM
    tx = reputation.slash_epoch(node_id, epoch, sender=stranger)
    [slashed] = tx.events.filter(reputation.QuorumSlashed)
    assert (slashed.reports, slashed.failures) == (REPORT_QUORUM, REPORT_QUORUM)
    order = [panel[REPORT_QUORUM - 1], *panel[: REPORT_QUORUM - 1]]
    assert list(slashed.reporters) == [member.address for member in order]
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
