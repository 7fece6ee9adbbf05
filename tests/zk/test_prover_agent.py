"""agents/prover: notes and signers files, tree rebuilt from events, and a real deposit -> prove ->
redeem -> voucher channel on anvil."""

import json
import os
import stat

import ape
import pytest
from eth_account import Account

from agents.chain.bindings import VoucherChannel, VoucherChannelError
from agents.prover.chain import (
    deposit_note,
    find_channel,
    pool_tree,
    submit_redemption,
    sync_spent,
)
from agents.prover.errors import ChainDataError, ProverError
from agents.prover.notes import NoteStore
from agents.prover.redemption import Redemption, check_redemption, make_redemption
from agents.prover.signers import SignerStore
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


def test_notes__old_file_without_channel_ids__loads(tmp_path):
    path = tmp_path / "notes.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"notes": [{"nullifier": 1, "secret": 2, "pool": "0x" + "ab" * 20, "denomination": 5,
                              "leaf_index": 0, "spent": True, "redeemed_to": None}]}, handle)
    [note] = NoteStore(path).notes
    assert note.spent and note.channel_id is None


# -- signers file and voucher channels -------------------------------------------------------------


def test_signers__fresh_keys_0600_and_reload_with_channel(tmp_path):
    store = SignerStore(tmp_path / "w" / "signers.json")
    a, b = store.new(nullifier_hash=7), store.new()
    assert a.address != b.address and Account.from_key(a.private_key).address == a.address
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    channel = VoucherChannel("0x" + "ab" * 20, 1337, b"\x01" * 32, b"\x02" * 32, a.address, 99)
    store.set_channel(channel)
    again = SignerStore(store.path)
    assert [s.address for s in again.signers] == [a.address, b.address]
    assert again.find(a.address).channel == channel and again.find(a.address).nullifier_hash == 7
    assert again.find(b.address).channel is None
    with pytest.raises(ProverError, match="no stored key"):
        again.set_channel(VoucherChannel(channel.pool, 1337, b"\x01" * 32, b"\x02" * 32, "0x" + "33" * 20, 9))


def test_signers__readable_by_others_or_wrong_key__refused(tmp_path):
    store = SignerStore(tmp_path / "signers.json")
    signer = store.new()
    os.chmod(store.path, 0o604)
    with pytest.raises(ProverError, match="readable by others"):
        SignerStore(store.path)
    os.chmod(store.path, 0o600)
    signer.address = Account.create().address  # the address no longer belongs to the key
    store.save()
    with pytest.raises(ProverError, match="does not match"):
        SignerStore(store.path)


def test_voucher_channel__json_round_trip_and_terms_hash():
    from eth_abi import encode
    from eth_utils import keccak

    channel = VoucherChannel("0x" + "ab" * 20, 1337, b"\x01" * 32, b"\x02" * 32, "0x" + "cd" * 20, 10**19)
    assert VoucherChannel.from_json(channel.to_json()) == channel
    assert channel.terms_hash == keccak(encode(["bytes32", "address", "uint256"], [b"\x02" * 32, channel.signer, 10**19]))


@pytest.mark.parametrize("field, value", [
    ("channel_id", "0x01"), ("node_id", "0x" + "zz" * 32), ("signer", "0x1234"), ("deposit", "0"),
    ("pool", None), ("chain_id", "x"),
])
def test_voucher_channel__malformed_json__refused(field, value):
    channel = VoucherChannel("0x" + "ab" * 20, 1337, b"\x01" * 32, b"\x02" * 32, "0x" + "cd" * 20, 10**19)
    raw = json.loads(channel.to_json())
    raw[field] = value
    with pytest.raises(VoucherChannelError):
        VoucherChannel.from_json(json.dumps(raw))


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


def test_agent__deposit_prove_redeem__opens_voucher_channel_once(tmp_path, pool, token, client, stranger, operator,
                                                                 register_node, keys, depth, accounts):
    node_id = register_node()
    signers = SignerStore(tmp_path / "signers.json")
    signer = signers.new().address  # a fresh key, never seen on chain
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
    assert handed == redemption and check_redemption(keys[1], handed, str(pool.address), node_id)
    assert find_channel(pool, mine[1].note.nullifier_hash) is None  # not submitted yet

    before = token.balanceOf(operator)
    submission = submit_redemption(pool, handed, operator)
    channel = submission.channel
    [event] = submission.receipt.decode_logs(pool.Redeemed)
    assert event.node_id == node_id and event.signer == signer and event.relayer == operator
    assert channel == VoucherChannel(str(pool.address), ape.chain.chain_id, bytes(event.channel_id), node_id, signer,
                                     DENOMINATION - FEE)
    assert channel.channel_id == pool.channel_id_of(mine[1].note.nullifier_hash)
    assert pool.channel(channel.channel_id) == (channel.terms_hash, 0, 0, 0, 1)  # open, nothing settled
    assert token.balanceOf(operator) == before  # the fee is credited, not paid
    assert pool.relayer_balance(operator) == FEE
    assert client.address not in (event.signer, event.relayer)
    assert submission.gas_used == submission.receipt.gas_used > 0
    assert submission.txn_hash == submission.receipt.txn_hash  # callers of the old API get the receipt's
    # The client, later, finds the same channel from the chain alone.
    assert find_channel(pool, mine[1].note.nullifier_hash) == channel

    with ape.reverts("voucher_pool: nullifier spent"):
        submit_redemption(pool, handed, operator)
    assert sync_spent(store, pool) == 1 and mine[1].spent and not mine[0].spent
    with pytest.raises(ProverError, match="spent"):
        make_redemption(mine[1], tree, keys[0], depth, node_id, signer, FEE)


def test_agent__redemption_for_another_node__node_refuses(tmp_path, pool, token, client, register_node, keys,
                                                         depth, accounts):
    node_id = register_node()
    note = deposit_note(NoteStore(tmp_path / "notes.json"), pool, token, client, DENOMINATION)
    redemption = make_redemption(note, pool_tree(pool), keys[0], depth, node_id, Account.create().address, FEE)
    assert check_redemption(keys[1], redemption, str(pool.address), node_id)
    assert not check_redemption(keys[1], redemption, str(pool.address), b"\x07" * 32)


def test_find_channel__event_disagrees_with_pool__chain_data_error(tmp_path, pool, token, client, operator,
                                                                  register_node, keys, depth):
    """A Redeemed event whose terms the pool does not hold (a lying event source) is refused."""
    from types import SimpleNamespace

    from agents.prover.chain import channel_from_event

    node_id = register_node()
    note = deposit_note(NoteStore(tmp_path / "notes.json"), pool, token, client, DENOMINATION)
    signer = Account.create().address
    submission = submit_redemption(pool, make_redemption(note, pool_tree(pool), keys[0], depth, node_id, signer,
                                                         FEE), operator)
    [event] = submission.receipt.decode_logs(pool.Redeemed)
    good = dict(channel_id=event.channel_id, node_id=event.node_id, nullifier_hash=event.nullifier_hash,
                signer=event.signer, relayer_fee=event.relayer_fee)
    assert channel_from_event(pool, SimpleNamespace(**good)) == submission.channel
    for field, value in (("relayer_fee", 0), ("signer", client.address), ("nullifier_hash", 5),
                         ("node_id", b"\x09" * 32)):
        with pytest.raises(ChainDataError):
            channel_from_event(pool, SimpleNamespace(**{**good, field: value}))


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


def _cli(*argv):
    import argparse

    from agents.prover.cli import add_commands

    parser = argparse.ArgumentParser(prog="warren")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli__deposit_redeem_then_node_submits_and_client_syncs(tmp_path, pool, token, client, operator,
                                                               stranger, register_node, keys, accounts, capsys):
    """`warren voucher deposit`, `redeem --out` (client, fresh signer), `submit` (node), `sync`, `fees`."""
    from zk.keys import save_keys

    node_id = register_node()
    save_keys(tmp_path / "keys", *keys)
    notes = str(tmp_path / "notes.json")
    client_index = str(list(accounts).index(client))
    operator_index = str(list(accounts).index(operator))
    stranger_index = str(list(accounts).index(stranger))
    keys_dir = str(tmp_path / "keys")
    assert _cli("voucher", "deposit", "--amount", str(DENOMINATION), "--pool", str(pool.address),
                "--notes", notes, "--account", client_index) == 0
    assert _cli("voucher", "redeem", "--node", "0x" + node_id.hex(), "--fee", str(FEE),
                "--pool", str(pool.address), "--notes", notes, "--keys", keys_dir,
                "--out", str(tmp_path / "r.json"), "--account", client_index) == 0
    out = capsys.readouterr().out
    [signer] = SignerStore(tmp_path / "signers.json").signers  # the fresh key, kept beside the notes
    assert stat.S_IMODE(os.stat(tmp_path / "signers.json").st_mode) == 0o600
    redemption = Redemption.from_json((tmp_path / "r.json").read_text())
    assert redemption.signer == signer.address and signer.nullifier_hash == redemption.nullifier_hash
    channel_id = bytes(pool.channel_id_of(redemption.nullifier_hash))
    assert f"channel 0x{channel_id.hex()}" in out and str(DENOMINATION - FEE) in out
    assert not pool.nullifier_spent(redemption.nullifier_hash)  # handed over, not yet submitted

    # A node submits only to a pool it trusts (--pool or its deployment file), never to the one the
    # client's document names.
    assert _cli("voucher", "submit", str(tmp_path / "r.json"), "--keys", keys_dir, "--account", operator_index,
                "--pool", str(token.address)) == 1
    assert "not one of ours" in capsys.readouterr().err
    assert _cli("voucher", "submit", str(tmp_path / "r.json"), "--keys", keys_dir, "--account", operator_index,
                "--deployment", str(tmp_path / "none.json")) == 1
    assert "no deployment file" in capsys.readouterr().err
    # A node that does not operate the redemption's node refuses it before paying gas.
    submit = ("voucher", "submit", str(tmp_path / "r.json"), "--keys", keys_dir, "--pool", str(pool.address))
    assert _cli(*submit, "--account", stranger_index) == 1
    assert "not ours" in capsys.readouterr().err
    assert _cli(*submit, "--account", operator_index,
                "--node", "0x" + "07" * 32) == 1
    assert "not ours" in capsys.readouterr().err
    assert not pool.nullifier_spent(redemption.nullifier_hash)

    # The node's deployment file names the pool: submitted.
    from agents.chain.deployment import CONTRACT_NAMES, Deployment

    deployment = Deployment(ape.chain.chain_id, {name: str(token.address) for name in CONTRACT_NAMES}
                            | {"voucher_pool_10": str(pool.address)})
    deployment.save(tmp_path / "deployment.json")
    assert _cli("voucher", "submit", str(tmp_path / "r.json"), "--keys", keys_dir, "--account", operator_index,
                "--deployment", str(tmp_path / "deployment.json"), "--out", str(tmp_path / "channel.json")) == 0
    out = capsys.readouterr().out
    channel = VoucherChannel.from_json((tmp_path / "channel.json").read_text())
    assert channel.channel_id == channel_id and channel.signer == signer.address
    assert (channel.node_id, channel.deposit) == (node_id, DENOMINATION - FEE)
    assert f"channel 0x{channel_id.hex()}" in out and f"deposit {DENOMINATION - FEE}" in out
    assert _cli(*submit, "--account", operator_index) == 1  # spent: refused before paying gas
    assert "already redeemed" in capsys.readouterr().err

    # The client learns its channel from the chain and keeps it beside the signer's key.
    assert _cli("voucher", "sync", "--pool", str(pool.address), "--notes", notes, "--account", client_index) == 0
    assert SignerStore(tmp_path / "signers.json").find(signer.address).channel == channel
    [note] = NoteStore(notes).notes
    assert note.spent and note.channel_id == "0x" + channel_id.hex()
    capsys.readouterr()

    # The node's relayer fee: shown, withdrawn, then nothing left.
    before = token.balanceOf(operator)
    assert _cli("voucher", "fees", "--pool", str(pool.address), "--account", operator_index) == 0
    assert f"{FEE} token wei" in capsys.readouterr().out
    assert _cli("voucher", "fees", "--withdraw", "--pool", str(pool.address), "--account", operator_index) == 0
    assert token.balanceOf(operator) - before == FEE and pool.relayer_balance(operator) == 0
    assert _cli("voucher", "fees", "--withdraw", "--pool", str(pool.address), "--account", operator_index) == 1
    assert "no relayer fees" in capsys.readouterr().err

    # The client closes without the node: its signer has no gas money, so it signs a close request
    # and a relayer (here the stranger) submits it; after the challenge period anyone finishes it.
    request = tmp_path / "close.json"
    assert _cli("voucher", "close", "--channel", "0x" + "ee" * 32, "--notes", notes) == 1
    assert "no stored signer holds channel" in capsys.readouterr().err
    assert _cli("voucher", "close", "--channel", "0x" + channel_id.hex(), "--notes", notes, "--out", str(request)) == 0
    assert "any relayer can submit it" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{}")
    assert _cli("voucher", "close", "--request", str(tmp_path / "bad.json"), "--submit",
                "--account", stranger_index) == 1
    assert "is not a close request" in capsys.readouterr().err
    assert _cli("voucher", "close", "--request", str(request), "--submit", "--account", stranger_index) == 0
    assert "close started" in capsys.readouterr().out
    assert pool.channel(channel_id)[4] == 2  # closing
    ape.chain.pending_timestamp = pool.channel(channel_id)[3]
    refund_before = token.balanceOf(signer.address)
    assert _cli("voucher", "close", "--request", str(request), "--finalize", "--account", stranger_index) == 0
    assert f"refunded {DENOMINATION - FEE}" in capsys.readouterr().out
    assert token.balanceOf(signer.address) - refund_before == DENOMINATION - FEE
    assert pool.channel(channel_id)[4] == 3


def test_cli__redeem_submit__client_submits_itself_and_keeps_channel(tmp_path, pool, token, client, register_node,
                                                                    keys, accounts, capsys):
    from zk.keys import save_keys

    node_id = register_node()
    save_keys(tmp_path / "keys", *keys)
    notes = str(tmp_path / "notes.json")
    client_index = str(list(accounts).index(client))
    assert _cli("voucher", "deposit", "--amount", str(DENOMINATION), "--pool", str(pool.address),
                "--notes", notes, "--account", client_index) == 0
    assert _cli("voucher", "redeem", "--node", "0x" + node_id.hex(), "--pool", str(pool.address), "--notes", notes,
                "--keys", str(tmp_path / "keys"), "--submit", "--account", client_index) == 0
    [signer] = SignerStore(tmp_path / "signers.json").signers
    assert signer.channel is not None and signer.channel.deposit == DENOMINATION  # no relayer fee
    assert f"channel 0x{signer.channel.channel_id.hex()}" in capsys.readouterr().out
    assert pool.channel(signer.channel.channel_id)[0] == signer.channel.terms_hash
