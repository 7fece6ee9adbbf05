"""agents/prover: notes file, tree rebuilt from events, and a real deposit -> prove -> redeem on anvil."""

import os
import stat

import ape
import pytest

from agents.prover.chain import deposit_note, pool_tree, submit_redemption, sync_spent
from agents.prover.errors import ChainDataError, ProverError
from agents.prover.notes import NoteStore
from agents.prover.redemption import Redemption, check_redemption, make_redemption
from agents.prover.tree import DepositEvent, rebuild_tree
from zk.export import vk_to_json
from zk.merkle import LeanIMT


DENOMINATION = 10 * 10**18
FEE = 10**17


# -- notes file ------------------------------------------------------------------------------------


def test_notes__file_is_0600_and_reloads(tmp_path):
    store = NoteStore(tmp_path / "w" / "notes.json")
    n = store.add("0x" + "ab" * 20, DENOMINATION)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    again = NoteStore(store.path)
    assert again.notes == [n] and again.find(n.commitment) == n
    assert again.unspent() == []  # not deposited yet


def test_notes__readable_by_others__refused(tmp_path):
    store = NoteStore(tmp_path / "notes.json")
    store.add("0x" + "ab" * 20, DENOMINATION)
    os.chmod(store.path, 0o644)
    with pytest.raises(ProverError, match="readable by others"):
        NoteStore(store.path)


def test_notes__unknown_commitment__raises(tmp_path):
    with pytest.raises(ProverError):
        NoteStore(tmp_path / "notes.json").find(123)


# -- tree from events ------------------------------------------------------------------------------


def _events(leaves):
    tree, out = LeanIMT(), []
    for i, leaf in enumerate(leaves):
        out.append(DepositEvent(leaf, i, tree.insert(leaf)))
    return out


def test_rebuild_tree__any_order__same_tree():
    events = _events([11, 22, 33, 44, 55])
    assert rebuild_tree(reversed(events)).root == LeanIMT([11, 22, 33, 44, 55]).root


@pytest.mark.parametrize("damage", [
    lambda ev: ev[:2] + ev[3:],                                            # a missing deposit
    lambda ev: ev + [ev[-1]],                                              # a duplicated event
    lambda ev: ev[:-1] + [DepositEvent(ev[-1].commitment, ev[-1].leaf_index, 7)],  # a lying root
    lambda ev: [DepositEvent(0, 0, 0)],                                    # a zero leaf
])
def test_rebuild_tree__inconsistent_events__chain_data_error(damage):
    with pytest.raises(ChainDataError):
        rebuild_tree(damage(_events([11, 22, 33, 44])))


# -- on chain --------------------------------------------------------------------------------------


@pytest.fixture
def pool(project, owner, token, channels, keys, depth):
    from zk.onchain import deploy_poseidon_bytecode, deploy_verifier
    from zk.vyper_verifier import vk_from_snarkjs

    verifier = deploy_verifier(vk_from_snarkjs(vk_to_json(keys[1])), owner)
    poseidon = deploy_poseidon_bytecode(owner)
    return owner.deploy(project.voucher_pool, channels, verifier, poseidon, DENOMINATION, depth)


def test_agent__deposit_prove_redeem__opens_channel_once(tmp_path, pool, token, client, stranger, operator,
                                                         register_node, keys, depth, accounts):
    node_id = register_node()
    signer = accounts.generate_test_account().address  # a fresh key, never seen on chain
    store = NoteStore(tmp_path / "notes.json")
    mine = [deposit_note(store, pool, token, client, DENOMINATION) for _ in range(2)]
    deposit_note(NoteStore(tmp_path / "other.json"), pool, token, stranger, DENOMINATION)
    mine.append(deposit_note(store, pool, token, client, DENOMINATION))
    assert [n.leaf_index for n in mine] == [0, 1, 3]
    with pytest.raises(ProverError):
        deposit_note(store, pool, token, client, DENOMINATION + 1)

    tree = pool_tree(pool)
    assert tree.root == pool.root() and tree.size == 4

    redemption = make_redemption(mine[1], tree, keys[0], depth, node_id, signer, FEE)
    handed = Redemption.from_json(redemption.to_json())  # what the node receives
    assert handed == redemption and check_redemption(keys[1], handed, str(pool.address))

    before = token.balanceOf(operator)
    receipt = submit_redemption(pool, handed, operator)
    [event] = receipt.decode_logs(pool.Redeemed)
    assert event.node_id == node_id and event.signer == signer and event.relayer == operator
    assert pool.channel_of(node_id, signer) == event.channel_id != b"\x00" * 32
    assert token.balanceOf(operator) - before == FEE
    assert client.address not in (event.signer, event.relayer)

    with ape.reverts("voucher_pool: nullifier spent"):
        submit_redemption(pool, handed, operator)
    assert sync_spent(store, pool) == 1 and mine[1].spent and not mine[0].spent
    with pytest.raises(ProverError, match="spent"):
        make_redemption(mine[1], tree, keys[0], depth, node_id, signer, FEE)


def test_agent__redemption_changed_in_flight__node_and_pool_refuse(tmp_path, pool, token, client, operator,
                                                                   register_node, keys, depth, accounts):
    node_id = register_node()
    signer = accounts.generate_test_account().address
    store = NoteStore(tmp_path / "notes.json")
    note = deposit_note(store, pool, token, client, DENOMINATION)
    redemption = make_redemption(note, pool_tree(pool), keys[0], depth, node_id, signer, FEE)
    for field, value in (("relayer_fee", FEE * 2), ("signer", operator.address),
                         ("node_id", "0x" + "ee" * 32)):
        changed = Redemption(**{**redemption.__dict__, field: value})
        assert not check_redemption(keys[1], changed)
        with ape.reverts("voucher_pool: invalid proof"):
            submit_redemption(pool, changed, operator)
    assert not check_redemption(keys[1], redemption, pool="0x" + "00" * 20)
    unknown_root = Redemption(**{**redemption.__dict__, "root": (redemption.root + 1) % (1 << 253)})
    assert not check_redemption(keys[1], unknown_root)
    with ape.reverts("voucher_pool: unknown root"):
        submit_redemption(pool, unknown_root, operator)
    submit_redemption(pool, redemption, operator)


def test_cli__deposit_redeem_then_node_submits(tmp_path, pool, token, client, operator, register_node, keys,
                                               accounts, capsys):
    """`warren voucher deposit`, `redeem --out` (client), `submit` (node), on the test chain."""
    import argparse

    from agents.prover.cli import add_commands
    from zk.keys import save_keys

    def warren(*argv):
        parser = argparse.ArgumentParser(prog="warren")
        add_commands(parser.add_subparsers(dest="command"))
        args = parser.parse_args(list(argv))
        return args.func(args)

    node_id = register_node()
    signer = accounts.generate_test_account().address
    save_keys(tmp_path / "keys", *keys)
    notes = str(tmp_path / "notes.json")
    client_index = str(list(accounts).index(client))
    operator_index = str(list(accounts).index(operator))
    assert warren("voucher", "deposit", "--amount", str(DENOMINATION), "--pool", str(pool.address),
                  "--notes", notes, "--account", client_index) == 0
    assert warren("voucher", "redeem", "--node", "0x" + node_id.hex(), "--signer", signer, "--fee", str(FEE),
                  "--pool", str(pool.address), "--notes", notes, "--keys", str(tmp_path / "keys"),
                  "--out", str(tmp_path / "r.json"), "--account", client_index) == 0
    assert pool.channel_of(node_id, signer) == b"\x00" * 32  # handed over, not yet submitted
    assert warren("voucher", "submit", str(tmp_path / "r.json"), "--keys", str(tmp_path / "keys"),
                  "--account", operator_index) == 0
    assert pool.channel_of(node_id, signer) != b"\x00" * 32
    assert warren("voucher", "submit", str(tmp_path / "r.json"), "--keys", str(tmp_path / "keys"),
                  "--account", operator_index) == 1  # spent: refused before paying gas
    assert "already redeemed" in capsys.readouterr().err
