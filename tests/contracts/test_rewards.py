"""rewards.vy on anvil: emission schedule, median-of-challengers service, regional demand pool,
pull claims, whole-string reverts; plus the pieces it needs in the other contracts (reputation's
per-epoch service histogram, payment_channels' per-region payments and price at open, node_registry's
once-per-epoch update rule), and a hypothesis invariant: an epoch's claims never exceed its emission.
"""

import os

import ape
import pytest
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.economy.sim import bucket_floor_kbps
from contract_fixtures import FEE_BPS, MIN_NODE_STAKE, TOKEN

EPOCH = 86_400  # seconds: reputation's epoch, also the rewards and update epoch
EMISSION = 1_000 * TOKEN
HALVING_EPOCHS = 10
DEMAND_SHARE_BPS = 5_000
FEE_REBATE_BPS = 8_000
MIN_REPORTS = 3
BPS = 10_000


def _code(region: str) -> int:
    return int.from_bytes(region.encode("ascii"), "big")


@pytest.fixture
def panel(accounts, owner, token, registry):
    """Four staked challengers with no role in these tests (the guardians and the tenth account)."""
    panel = []
    for account in (accounts[4], accounts[5], accounts[6], accounts[9]):
        token.mint(account, 100 * TOKEN, sender=owner)
        token.approve(registry, 100 * TOKEN, sender=account)
        registry.register_challenger(100 * TOKEN, sender=account)
        panel.append(account)
    return panel


@pytest.fixture
def rep(project, owner, registry):
    """reputation.vy with day epochs (quorum 3, 10 % slash), authorised to slash."""
    contract = owner.deploy(project.reputation, registry, EPOCH, 3, 1_000, 12)
    registry.set_slasher(contract, True, sender=owner)
    return contract


@pytest.fixture
def rewards(project, owner, token, registry, channels, rep, panel):
    """rewards.vy over the shared token/registry/channels and `rep`, minting, with updates limited."""
    contract = owner.deploy(
        project.rewards, token, channels, rep, EMISSION, HALVING_EPOCHS, DEMAND_SHARE_BPS, FEE_REBATE_BPS,
        MIN_REPORTS,
    )
    token.set_minter(contract, True, sender=owner)
    registry.set_update_epoch_length(EPOCH, sender=owner)
    return contract


@pytest.fixture
def epoch(chain, rewards):
    """Move to one minute into the next epoch; returns its number."""
    e = chain.pending_timestamp // EPOCH + 1
    chain.pending_timestamp = e * EPOCH + 60
    return e


@pytest.fixture
def goto(chain):
    """Factory: move to one minute into epoch `e`."""

    def _goto(e):
        chain.pending_timestamp = e * EPOCH + 60
        chain.mine()

    return _goto


@pytest.fixture
def report(rep, panel):
    """Factory: the panel's reports (kbps, passed) on a node in the current epoch."""

    def _report(node_id, epoch, measurements):
        for challenger, (kbps, passed) in zip(panel, measurements, strict=False):
            rep.report(node_id, epoch, kbps, 20, passed, sender=challenger)

    return _report


@pytest.fixture
def pay(open_channel, sign_receipt, sign_close, channels, operator, make_signer):
    """Factory: a client pays `amount` to a node in a channel closed cooperatively (fee included)."""

    def _pay(node_id, amount):
        key, address = make_signer()
        channel_id = open_channel(node_id, deposit=amount, signer_address=address)
        channels.cooperative_close(
            channel_id, 10**6, amount, sign_receipt(channel_id, 10**6, amount, key=key),
            sign_close(channel_id, 10**6, amount), sender=operator,
        )
        return channel_id

    return _pay


def _floor(kbps: int) -> int:
    """reputation's bucket floor for a passing measurement: the simulation's copy of the rule, so
    these tests also hold the model (agents/economy/sim.py) to the contract."""
    return bucket_floor_kbps(kbps)


# -- reputation's per-epoch median -----------------------------------------------------------------

# The last is the most reputation.report accepts (2**40 - 1 kbit/s, since the epoch median keeps samples).
@pytest.mark.parametrize("kbps", [999, 1000, 1413, 1414, 1415, 2000, 99_000, 100_000, 2**40 - 1])
def test_epoch_service__bucket_floors(rep, register_node, report, epoch, kbps):
    node_id = register_node()
    report(node_id, epoch, [(kbps, True)])
    assert rep.epoch_service(node_id, epoch) == (_floor(kbps), 1)


def test_epoch_service__lying_minority__median_stays_honest(rep, register_node, report, epoch):
    node_id = register_node()
    # Two honest 100 Mbit/s, one lying "failed", one self-dealing 40 Gbit/s: lower median of 4 is the 2nd.
    report(node_id, epoch, [(100_000, True), (0, False), (40_000_000, True), (100_000, True)])
    assert rep.epoch_service(node_id, epoch) == (_floor(100_000), 4)


def test_epoch_service__fails_half_the_challenges__zero(rep, register_node, report, epoch):
    node_id = register_node()
    report(node_id, epoch, [(100_000, True), (0, False), (0, False), (100_000, True)])
    assert rep.epoch_service(node_id, epoch) == (0, 4)


# -- node_registry: one update per epoch ---------------------------------------------------------------

def test_update_node__twice_in_one_epoch__reverts_then_next_epoch_ok(registry, rewards, operator, node_id, epoch, goto):
    registry.update_node(node_id, "TR", 5, sender=operator)
    with ape.reverts("node_registry: updated this epoch"):
        registry.update_node(node_id, "TR", 6, sender=operator)
    goto(epoch + 1)
    registry.update_node(node_id, "TR", 6, sender=operator)
    assert registry.node_price(node_id) == 6


def test_set_update_epoch_length__not_owner__reverts(registry, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        registry.set_update_epoch_length(1, sender=stranger)


# -- payment_channels: price at open, per-region payments ------------------------------------------------

def test_open_channel__logs_price_at_open__later_update_does_not_change_what_it_pays(
    rewards, registry, channels, token, client, operator, register_node, make_signer, sign_receipt, epoch
):
    price = 7 * 10**15
    node_id = register_node(price_per_gib=price)
    key, address = make_signer()
    token.approve(channels, TOKEN, sender=client)
    tx = channels.open_channel(node_id, client, address, TOKEN, sender=client)
    [log] = tx.decode_logs(channels.ChannelOpened)
    assert log.price_per_gib == price
    channel_id = bytes(tx.return_value)
    registry.update_node(node_id, "DE", 3 * price, sender=operator)
    # The client signs at the price it opened at; settlement never reads the registry's price.
    amount = 2 * price
    channels.settle(channel_id, 2 * 2**30, amount, sign_receipt(channel_id, 2 * 2**30, amount, key=key), sender=operator)
    assert channels.channel(channel_id)[3] == amount


def test_close__adds_what_the_channel_paid_to_its_region(
    rewards, channels, register_node, pay, sign_receipt, make_signer, open_channel, operator, client, chain
):
    node_id = register_node(region="BR")
    before = channels.region_paid(_code("BR"))
    pay(node_id, 3 * TOKEN)
    assert channels.region_paid(_code("BR")) == before + 3 * TOKEN
    # Settled, then closed unilaterally: counted once, at finalisation.
    key, address = make_signer()
    channel_id = open_channel(node_id, deposit=5 * TOKEN, signer_address=address)
    channels.settle(channel_id, 10, TOKEN, sign_receipt(channel_id, 10, TOKEN, key=key), sender=operator)
    assert channels.region_paid(_code("BR")) == before + 3 * TOKEN
    channels.start_close(channel_id, sender=client)
    chain.pending_timestamp += channels.challenge_period()
    tx = channels.finalize_close(channel_id, sender=client)
    assert channels.region_paid(_code("BR")) == before + 4 * TOKEN
    [closed] = tx.decode_logs(channels.ChannelClosed)
    assert closed.settled == TOKEN


# -- rewards: schedule ----------------------------------------------------------------------------------

def test_emission__fixed_schedule_halves(rewards):
    genesis = rewards.genesis_epoch()
    assert rewards.emission(genesis) == EMISSION
    assert rewards.emission(genesis + HALVING_EPOCHS - 1) == EMISSION
    assert rewards.emission(genesis + HALVING_EPOCHS) == EMISSION // 2
    assert rewards.emission(genesis + 3 * HALVING_EPOCHS) == EMISSION // 8
    assert rewards.emission(genesis - 1) == 0
    assert rewards.emission(genesis + 300 * HALVING_EPOCHS) == 0


@pytest.mark.parametrize(
    "args, message",
    [
        ((EMISSION, 0, 5_000, 8_000, 3), "rewards: zero halving period"),
        ((EMISSION, 10, 10_001, 8_000, 3), "rewards: demand share above 100 %"),
        ((EMISSION, 10, 5_000, 10_000, 3), "rewards: rebate must be below the fee"),
        ((EMISSION, 10, 5_000, 8_000, 0), "rewards: zero minimum reports"),
        ((2**128, 10, 5_000, 8_000, 3), "rewards: emission too large"),
    ],
)
def test_deploy__bad_parameters__reverts(project, owner, token, channels, rep, args, message):
    with ape.reverts(message):
        owner.deploy(project.rewards, token, channels, rep, *args)


# -- rewards: entering and claiming ------------------------------------------------------------------------

def test_submit_claim__split_by_median_service(rewards, token, operator, register_node, report, epoch, goto):
    fast, slow = register_node(region="DE"), register_node(region="DE")
    report(fast, epoch, [(100_000, True)] * 3)
    report(slow, epoch, [(50_000, True), (50_000, True), (0, False)])
    goto(epoch + 1)
    tx = rewards.submit(fast, epoch, sender=operator)
    [log] = tx.decode_logs(rewards.EpochEntered)
    assert (log.region, log.service_kbps) == ("DE", _floor(100_000))
    rewards.submit(slow, epoch, sender=operator)
    goto(epoch + 2)
    emission = rewards.emission(epoch)
    q_fast, q_slow = _floor(100_000), _floor(50_000)
    before = token.balanceOf(operator)
    tx = rewards.claim(fast, epoch, sender=operator)
    [log] = tx.decode_logs(rewards.RewardClaimed)
    assert (bytes(log.node_id), log.epoch, log.operator, log.amount) == (fast, epoch, operator, emission * q_fast // (q_fast + q_slow))
    rewards.claim(slow, epoch, sender=operator)
    assert token.balanceOf(operator) - before == emission * q_fast // (q_fast + q_slow) + emission * q_slow // (q_fast + q_slow)
    assert rewards.claimed(epoch) <= emission


@pytest.fixture
def paid_epoch(rewards, operator, register_node, report, pay, epoch, goto):
    """Factory: two equally measured nodes in `regions`; clients pay the second `paid`; both enter.

    Returns (first, second) node ids, with the chain in epoch + 2 (claims open).
    """

    def _run(regions, paid):
        first, second = (register_node(region=region) for region in regions)
        for node_id in (first, second):
            report(node_id, epoch, [(100_000, True)] * 3)
        pay(second, paid)
        goto(epoch + 1)
        rewards.submit(first, epoch, sender=operator)
        rewards.submit(second, epoch, sender=operator)
        goto(epoch + 2)
        return first, second

    return _run


def test_demand_pool__goes_to_the_region_clients_paid(rewards, operator, paid_epoch, epoch):
    paid = 2_000 * TOKEN
    de, tr = paid_epoch(("DE", "TR"), paid)
    emission = rewards.emission(epoch)
    pool = min(emission * DEMAND_SHARE_BPS // BPS, paid * FEE_BPS * FEE_REBATE_BPS // BPS**2)
    assert rewards.epoch_totals(epoch) == (2 * _floor(100_000), paid, pool)
    assert rewards.region_totals("TR", epoch) == (_floor(100_000), paid)
    service = (emission - pool) // 2
    assert rewards.claim(de, epoch, sender=operator).return_value == service
    assert rewards.claim(tr, epoch, sender=operator).return_value == service + pool


def test_wash_traffic__moves_less_reward_than_its_fee(rewards, operator, paid_epoch, epoch):
    """The operator pays its own node W: the reward it gains is below the fee it paid (gas aside)."""
    wash = 10_000 * TOKEN
    _, washer = paid_epoch(("DE", "NL"), wash)
    without_wash = rewards.emission(epoch) // 2
    gain = rewards.claim(washer, epoch, sender=operator).return_value - without_wash
    fee = wash * FEE_BPS // BPS
    assert 0 < gain < fee


def test_region_demand__snapshot_once_per_window(rewards, channels, operator, register_node, report, pay, epoch, goto):
    first, second = register_node(region="BR"), register_node(region="BR")
    for node_id in (first, second):
        report(node_id, epoch, [(100_000, True)] * 3)
    pay(first, 100 * TOKEN)
    goto(epoch + 1)
    rewards.submit(first, epoch, sender=operator)
    pay(second, 50 * TOKEN)  # after the snapshot: counts towards the next epoch, not this one
    rewards.submit(second, epoch, sender=operator)
    assert rewards.region_totals("BR", epoch)[1] == 100 * TOKEN
    assert rewards.region_snapshot(_code("BR")) == channels.region_paid(_code("BR")) - 50 * TOKEN


def test_claim__twice__reverts(rewards, operator, register_node, report, epoch, goto):
    node_id = register_node()
    report(node_id, epoch, [(10_000, True)] * 3)
    goto(epoch + 1)
    rewards.submit(node_id, epoch, sender=operator)
    goto(epoch + 2)
    rewards.claim(node_id, epoch, sender=operator)
    with ape.reverts("rewards: already claimed"):
        rewards.claim(node_id, epoch, sender=operator)
    assert rewards.pending(node_id, epoch) == 0


def test_claim__not_submitted__reverts(rewards, operator, register_node, epoch, goto):
    node_id = register_node()
    goto(epoch + 2)
    with ape.reverts("rewards: not submitted"):
        rewards.claim(node_id, epoch, sender=operator)


def test_submit_and_claim__unfinished_open_or_closed_window_or_twice__reverts(
    rewards, operator, register_node, report, epoch, goto
):
    node_id = register_node()
    report(node_id, epoch, [(10_000, True)] * 3)
    for call in (rewards.submit, rewards.claim):
        with ape.reverts("rewards: epoch not finished"):
            call(node_id, epoch, sender=operator)
    goto(epoch + 1)
    rewards.submit(node_id, epoch, sender=operator)
    with ape.reverts("rewards: already submitted"):
        rewards.submit(node_id, epoch, sender=operator)
    with ape.reverts("rewards: submission window open"):
        rewards.claim(node_id, epoch, sender=operator)
    goto(epoch + 2)
    with ape.reverts("rewards: submission window closed"):
        rewards.submit(node_id, epoch, sender=operator)


def test_submit__before_genesis__reverts(project, owner, token, channels, rep, operator, register_node):
    fresh = owner.deploy(project.rewards, token, channels, rep, EMISSION, HALVING_EPOCHS, DEMAND_SHARE_BPS,
                         FEE_REBATE_BPS, MIN_REPORTS)
    node_id = register_node()
    with ape.reverts("rewards: before genesis"):
        fresh.submit(node_id, fresh.genesis_epoch() - 1, sender=operator)


def test_submit__too_few_reports_or_no_service__reverts(rewards, operator, register_node, report, epoch, goto):
    few, down = register_node(), register_node()
    report(few, epoch, [(10_000, True)] * 2)
    report(down, epoch, [(0, False), (0, False), (10_000, True)])  # 2 failures: below the slashing quorum
    goto(epoch + 1)
    with ape.reverts("rewards: too few reports"):
        rewards.submit(few, epoch, sender=operator)
    with ape.reverts("rewards: no measured service"):
        rewards.submit(down, epoch, sender=operator)


def test_submit_and_claim__revoked_node__reverts(rewards, registry, operator, register_node, report, revoker, treasury, epoch, goto):
    node_id = register_node()
    report(node_id, epoch, [(10_000, True)] * 3)
    goto(epoch + 1)
    rewards.submit(node_id, epoch, sender=operator)
    registry.revoke(node_id, treasury, sender=revoker)
    goto(epoch + 2)
    with ape.reverts("rewards: node revoked"):
        rewards.claim(node_id, epoch, sender=operator)
    with ape.reverts("rewards: node revoked"):
        rewards.submit(node_id, epoch + 1, sender=operator)


def test_submit_and_claim__unstaked_node__reverts(rewards, registry, operator, register_node, report, epoch, goto):
    unbonding, unknown = register_node(), keccak(os.urandom(32))
    report(unbonding, epoch, [(10_000, True)] * 3)
    goto(epoch + 1)
    rewards.submit(unbonding, epoch, sender=operator)
    registry.request_unbonding(unbonding, sender=operator)
    goto(epoch + 2)
    with ape.reverts("rewards: node not staked"):
        rewards.claim(unbonding, epoch, sender=operator)
    with ape.reverts("rewards: node not staked"):
        rewards.submit(unknown, epoch + 1, sender=operator)


def test_claim__slashed_below_minimum__reverts(rewards, registry, operator, register_node, report, slasher, epoch, goto):
    node_id = register_node()
    report(node_id, epoch, [(10_000, True)] * 3)
    goto(epoch + 1)
    rewards.submit(node_id, epoch, sender=operator)
    registry.slash(node_id, MIN_NODE_STAKE // 2, slasher, sender=slasher)
    goto(epoch + 2)
    with ape.reverts("rewards: node not staked"):
        rewards.claim(node_id, epoch, sender=operator)


# -- invariant -------------------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    nodes=st.lists(
        st.tuples(
            st.sampled_from(["DE", "TR", "BR"]),
            st.lists(st.integers(min_value=500, max_value=10**8), min_size=3, max_size=4),
            st.integers(min_value=0, max_value=5_000),
        ),
        min_size=1, max_size=4,
    ),
)
def test_invariant__claims_never_exceed_emission(chain, rewards, token, operator, register_node, report, pay, nodes):
    with chain.isolate():
        e = chain.pending_timestamp // EPOCH + 1
        chain.pending_timestamp = e * EPOCH + 60
        ids = []
        for region, measurements, paid in nodes:
            node_id = register_node(region=region)
            report(node_id, e, [(kbps, True) for kbps in measurements])
            if paid:
                pay(node_id, paid * TOKEN)
            ids.append(node_id)
        chain.pending_timestamp = (e + 1) * EPOCH + 60
        entered = []
        for node_id in ids:
            try:
                rewards.submit(node_id, e, sender=operator)
                entered.append(node_id)
            except ape.exceptions.ContractLogicError as exc:
                assert "rewards: no measured service" in str(exc)
        chain.pending_timestamp = (e + 2) * EPOCH + 60
        supply = token.totalSupply()
        total = sum(rewards.claim(node_id, e, sender=operator).return_value for node_id in reversed(entered))
        assert total == rewards.claimed(e) == token.totalSupply() - supply
        assert total <= rewards.emission(e)
        if entered:  # rounding leaves at most a few wei per node and pool unminted
            assert rewards.emission(e) - total <= 3 * len(entered) + 3


# -- bindings ------------------------------------------------------------------------------------------------

def test_bindings__reward_entry_and_region_paid(rewards, token, registry, channels, rep, chain, operator, register_node,
                                                report, pay, epoch, goto):
    from agents.chain.bindings import RewardEntry, WarrenContracts

    warren = WarrenContracts(token=token, registry=registry, channels=channels, reputation=rep, revocations=None,
                             chain_id=chain.chain_id, rewards=rewards)
    node_id = register_node(region="TR")
    report(node_id, epoch, [(100_000, True)] * 3)
    before = warren.region_paid("TR")
    pay(node_id, 10 * TOKEN)
    assert warren.region_paid("TR") == before + 10 * TOKEN
    assert warren.reward_entry(node_id, epoch) == RewardEntry(epoch, 0, "", False, 0)
    goto(epoch + 1)
    rewards.submit(node_id, epoch, sender=operator)
    goto(epoch + 2)
    entry = warren.reward_entry(node_id, epoch)
    assert (entry.service_kbps, entry.region, entry.claimed) == (_floor(100_000), "TR", False)
    assert rewards.claim(node_id, epoch, sender=operator).return_value == entry.pending > 0
    assert warren.reward_entry(node_id, epoch).claimed
    with pytest.raises(ValueError, match="two letters"):
        warren.region_paid("TUR")
