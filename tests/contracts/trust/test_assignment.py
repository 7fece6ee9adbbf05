"""reputation.vy's challenger assignment: a report is accepted only from a challenger drawn for the
node in the epoch (keccak256(seed, challenger, node) mod C < reports_per_node, C the challengers who
reported in the epoch before), with the seed the hash of a block drawn by draw_seed and fixed once read."""

import os
import random

import ape
import pytest

from agents.challenger.assignment import is_drawn, read_assignment
from trust_params import EPOCH_LENGTH, REPORT_QUORUM, SLASH_BPS

#: Reports per node in these tests: the quorum, well below the ten challengers of `crowd`.
PER_NODE = REPORT_QUORUM


def test_deploy__reports_per_node_below_quorum__reverts(project, owner, registry):
    with ape.reverts("reputation: reports per node below quorum"):
        owner.deploy(project.reputation, registry, EPOCH_LENGTH, REPORT_QUORUM, SLASH_BPS, REPORT_QUORUM - 1)
    assert owner.deploy(project.reputation, registry, EPOCH_LENGTH, REPORT_QUORUM, SLASH_BPS,
                        REPORT_QUORUM).reports_per_node() == REPORT_QUORUM


@pytest.fixture
def drawn_epoch(deploy_reputation, crowd, register_node, start_epoch):
    """A reputation contract with PER_NODE reports per node, three nodes, and an epoch whose previous
    epoch had all ten `crowd` challengers report (so C = 10 > PER_NODE: the draw applies).
    Returns (contract, nodes, epoch)."""
    contract = deploy_reputation(reports_per_node=PER_NODE)
    nodes = [register_node() for _ in range(3)]
    first = start_epoch(contract)
    # With no reports in the epoch before, every challenger is drawn: no seed is needed.
    assert contract.is_assigned(crowd[0], nodes[0], first)
    for challenger in crowd:
        contract.report(nodes[0], first, 50_000, 20, True, sender=challenger)
    contract.report(nodes[1], first, 50_000, 20, True, sender=crowd[0])  # counted once
    assert contract.challengers_reporting(first) == len(crowd)
    epoch = start_epoch(contract)
    return contract, nodes, epoch


def _pairs(contract, crowd, nodes, epoch):
    """(assigned, unassigned) (challenger, node) pairs of the epoch, by the contract's view."""
    pairs = [(c, n) for n in nodes for c in crowd]
    assigned = [p for p in pairs if contract.is_assigned(p[0], p[1], epoch)]
    return assigned, [p for p in pairs if p not in assigned]


def test_report__seed_not_drawn__reverts(drawn_epoch, crowd):
    contract, nodes, epoch = drawn_epoch
    assert contract.assignment(epoch) == (bytes(32), 0, len(crowd))
    assert not contract.is_assigned(crowd[0], nodes[0], epoch)  # nothing is drawn before the seed
    with ape.reverts("reputation: seed not drawn"):
        contract.report(nodes[0], epoch, 50_000, 20, True, sender=crowd[0])


def test_report__assigned_accepted__unassigned_refused(drawn_epoch, crowd, chain):
    contract, nodes, epoch = drawn_epoch
    tx = contract.draw_seed(sender=crowd[0])
    [drawn] = tx.events.filter(contract.SeedDrawn)
    assert (drawn.epoch, drawn.drawn_block) == (epoch, tx.block_number)
    seed = chain.blocks[tx.block_number].hash
    # Views run in the latest block: the drawn block's hash is readable from the next one on.
    assert contract.assignment(epoch) == (bytes(32), tx.block_number, len(crowd))
    chain.mine()
    assert bytes(contract.assignment(epoch)[0]) == bytes(seed)

    assigned, unassigned = _pairs(contract, crowd, nodes, epoch)
    # 30 pairs drawn with probability 3/10 each: both kinds are there (all of one kind: < 1e-4).
    assert assigned and unassigned
    (c, n), (u, m) = assigned[0], unassigned[0]
    first = contract.report(n, epoch, 50_000, 20, True, sender=c)
    [fixed] = first.events.filter(contract.SeedFixed)  # the first report needing the seed stores it
    assert (fixed.epoch, fixed.drawn_block, bytes(fixed.seed)) == (epoch, tx.block_number, bytes(seed))
    assert contract.epoch_tally(n, epoch)[0] == 1
    with ape.reverts("reputation: challenger not assigned to this node this epoch"):
        contract.report(m, epoch, 50_000, 20, True, sender=u)
    # Every other pair is accepted exactly when the view says it is drawn.
    for challenger, node in assigned[1:]:
        contract.report(node, epoch, 50_000, 20, True, sender=challenger)
    for challenger, node in unassigned[1:4]:
        with ape.reverts("reputation: challenger not assigned to this node this epoch"):
            contract.report(node, epoch, 50_000, 20, False, sender=challenger)
    assert sum(contract.epoch_tally(node, epoch)[0] for node in nodes) == len(assigned)


def test_seed__fixed_once__cannot_change(drawn_epoch, crowd, chain):
    contract, nodes, epoch = drawn_epoch
    drawn = contract.draw_seed(sender=crowd[0]).block_number
    fix = contract.draw_seed(sender=crowd[1])  # a later block: fixes the seed to the drawn block's hash
    [fixed] = fix.events.filter(contract.SeedFixed)
    seed = bytes(chain.blocks[drawn].hash)
    assert bytes(fixed.seed) == seed
    before = [contract.is_assigned(c, n, epoch) for n in nodes for c in crowd]
    with ape.reverts("reputation: seed already fixed"):
        contract.draw_seed(sender=crowd[2])
    chain.mine(300)  # past BLOCKHASH's window: the stored seed stays
    with ape.reverts("reputation: seed already fixed"):
        contract.draw_seed(sender=crowd[2])
    assert contract.assignment(epoch) == (seed, drawn, len(crowd))
    assert [contract.is_assigned(c, n, epoch) for n in nodes for c in crowd] == before


def test_seed__not_fixed_within_window__expires_and_is_drawn_again(drawn_epoch, crowd, chain):
    contract, nodes, epoch = drawn_epoch
    contract.draw_seed(sender=crowd[0])
    chain.mine(257)  # the drawn block's hash is gone: no report can read it
    assert contract.assignment(epoch)[0] == bytes(32)
    assert not any(contract.is_assigned(c, nodes[0], epoch) for c in crowd)
    with ape.reverts("reputation: seed expired, draw it again"):
        contract.report(nodes[0], epoch, 50_000, 20, True, sender=crowd[0])
    again = contract.draw_seed(sender=crowd[0])
    [event] = again.events.filter(contract.SeedDrawn)
    assert event.drawn_block == again.block_number
    chain.mine()
    assert bytes(contract.assignment(epoch)[0]) == bytes(chain.blocks[again.block_number].hash)


def test_draw_seed__same_block_as_the_draw__not_ready(drawn_epoch, crowd, chain):
    # Two calls in one block: the second cannot read the block it is in. Simulated with eth_call on
    # the pending block that holds the first call (automine off).
    contract, nodes, epoch = drawn_epoch
    provider = chain.provider
    provider.make_request("evm_setAutomine", [False])
    try:
        data = contract.draw_seed.encode_input()
        provider.make_request("eth_sendTransaction", [{"from": crowd[0].address, "to": contract.address,
                                                        "data": "0x" + data.hex(), "gas": hex(200_000)}])
        call = {"from": crowd[1].address, "to": contract.address, "data": "0x" + data.hex()}
        with pytest.raises(Exception, match="reputation: seed not ready"):
            provider.web3.eth.call(call, "pending")
    finally:
        provider.make_request("evm_setAutomine", [True])
        chain.mine()


def test_assignment_rule__everyone_drawn_up_to_per_node(reputation):
    # REPORTS_PER_NODE (12) challengers or fewer in the epoch before: every pair is drawn.
    rng = random.Random(14)
    for active in (0, 1, 12):
        assert reputation.assignment_rule(rng.randbytes(32), "0x" + rng.randbytes(20).hex(), rng.randbytes(32), active)


def test_assignment_rule__python_and_contract_agree_on_random_inputs(deploy_reputation):
    contract = deploy_reputation(reports_per_node=PER_NODE)
    rng = random.Random(11)
    counts = {True: 0, False: 0}
    for _ in range(600):
        seed, node = rng.randbytes(32), rng.randbytes(32)
        challenger = "0x" + rng.randbytes(20).hex()
        active = rng.choice([1, 3, 4, 10, 1_000, 2**200 + 7])
        on_chain = contract.assignment_rule(seed, challenger, node, active)
        assert on_chain == is_drawn(seed, challenger, node, active, PER_NODE)
        if active == 10:
            counts[on_chain] += 1
    # About 3/10 of the ~100 pairs with C = 10 are drawn (sd ~0.046; bounds over 2 sd, fixed inputs).
    share = counts[True] / (counts[True] + counts[False])
    assert 0.15 < share < 0.45


def test_is_assigned__python_plan_agrees_with_contract_view(drawn_epoch, crowd, chain):
    contract, nodes, epoch = drawn_epoch
    drawn = contract.draw_seed(sender=crowd[0]).block_number
    # Right after the draw the view cannot read the drawn block yet; the agent reads its hash.
    head = chain.blocks.head.number
    draw = read_assignment(contract, epoch, head=head, block_hash=lambda n: bytes(chain.blocks[n].hash))
    assert draw.seed == bytes(chain.blocks[drawn].hash)
    chain.mine()
    assert (draw.active, draw.per_node, draw.ready) == (len(crowd), PER_NODE, True)
    extra = [os.urandom(32) for _ in range(5)]
    for node in [*nodes, *extra]:
        for challenger in crowd:
            assert draw.drawn(challenger.address, node) == contract.is_assigned(challenger, node, epoch)


def test_distribution__many_pairs_near_per_node_over_active(drawn_epoch, crowd):
    contract, _, epoch = drawn_epoch
    contract.draw_seed(sender=crowd[0])
    contract.draw_seed(sender=crowd[1])  # fixed
    draw = read_assignment(contract, epoch)
    rng = random.Random(7)
    nodes = [rng.randbytes(32) for _ in range(200)]
    per_node = [sum(draw.drawn(c.address, n) for c in crowd) for n in nodes]
    # Each node: Binomial(10, 3/10), mean 3: 2,000 pairs, the share within ~4 sd of 0.3.
    assert 0.25 < sum(per_node) / (len(nodes) * len(crowd)) < 0.35
    # The view agrees on a sample of them (the whole sample above is the Python rule).
    for node in nodes[:10]:
        assert [contract.is_assigned(c, node, epoch) for c in crowd] == [draw.drawn(c.address, node) for c in crowd]
