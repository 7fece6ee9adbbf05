"""Fixtures for the zk contracts: Poseidon on chain, the Groth16 verifier, the voucher pool and its channels.

The role and contract fixtures (`owner`, `operator`, `client`, `token`, `registry`, `channels`,
`register_node`, `node_id`, ...) come from tests/contract_fixtures.py; nothing here redefines them.

Helpers (trapdoor keys, proofs from scalars, a py_ecc reference check) are in trapdoor_keys.py.
`vouchers` drives one pool: it deposits notes, mirrors the tree in Python (zk.merkle.LeanIMT) and
redeems notes with trapdoor proofs into voucher channels (`VoucherChannel`), whose receipts it signs.
"""

import itertools
import random
from dataclasses import dataclass

import pytest
from eth_account import Account
from trapdoor_keys import DENOMINATION, TEST_DEPTH, Trapdoor

from agents.chain import eip712
from zk.merkle import LeanIMT
from zk.onchain import deploy_poseidon_bytecode, deploy_verifier
from zk.voucher import Note, ext_data_hash

#: Ether given to an impersonated payment signer so it can send its own start_close.
SIGNER_GAS_MONEY = 10**18


@pytest.fixture(scope="session")
def trapdoor():
    """The trapdoor key every verifier and pool test here uses."""
    return Trapdoor.make(seed=5)


@pytest.fixture(scope="session")
def verifier(trapdoor, owner):
    """The generated Groth16 verifier for the trapdoor key, compiled and deployed."""
    return deploy_verifier(trapdoor.vk, owner)


@pytest.fixture(scope="session")
def poseidon_bytecode(owner):
    """The generated Poseidon(2) bytecode contract (the one the pool uses)."""
    return deploy_poseidon_bytecode(owner)


@pytest.fixture(scope="session")
def poseidon_vyper(project, owner):
    """contracts/poseidon_t3.vy."""
    return owner.deploy(project.poseidon_t3)


@pytest.fixture
def deploy_pool(project, owner, token, channels, verifier, poseidon_bytecode):
    """Factory: a voucher pool over the real token and channels (defaults: trapdoor verifier)."""

    def deploy(denomination=DENOMINATION, max_depth=TEST_DEPTH, verifier_=None, poseidon_=None):
        return owner.deploy(
            project.voucher_pool,
            channels,
            verifier_ or verifier,
            poseidon_ or poseidon_bytecode,
            denomination,
            max_depth,
        )

    return deploy


@pytest.fixture
def pool(deploy_pool):
    """A pool of DENOMINATION with TEST_DEPTH."""
    return deploy_pool()


@pytest.fixture
def deposit(pool, token, client):
    """Factory: deposit `commitment` from `sender` (default client); returns the receipt."""

    def _deposit(commitment, sender=None, amount=DENOMINATION, target=None):
        target = target or pool
        sender = sender or client
        token.approve(target, amount, sender=sender)
        return target.deposit(commitment, amount, sender=sender)

    return _deposit


def note_from_seed(seed: int) -> Note:
    """A deterministic note (nullifier, secret) for `seed`."""
    rng = random.Random(seed)
    return Note(rng.getrandbits(248), rng.getrandbits(248))


@pytest.fixture(scope="session")
def make_note():
    """Factory: the deterministic note of a seed (`note_from_seed`)."""
    return note_from_seed


@dataclass(frozen=True)
class VoucherChannel:
    """A channel a redemption opened in a pool, with the payment signer's key.

    Attributes:
        pool: the voucher pool holding the channel.
        channel_id: keccak256(abi_encode(chain.id, pool, nullifier_hash)).
        node_id: the node the channel pays (terms).
        signer: the payment signer and refund address (terms).
        deposit: denomination - relayer_fee, in token wei (terms).
        key: the signer's private key.
        nullifier_hash: the redeemed note's nullifier hash.
        chain_id: the chain the receipts are signed for.
    """

    pool: object
    channel_id: bytes
    node_id: bytes
    signer: str
    deposit: int
    key: bytes
    nullifier_hash: int
    chain_id: int

    @property
    def terms(self) -> tuple:
        """(channel_id, node_id, signer, deposit): the first four arguments of every channel call."""
        return (self.channel_id, self.node_id, self.signer, self.deposit)

    def receipt(self, cumulative_bytes, cumulative_amount, key=None, contract=None, chain_id=None) -> bytes:
        """The signer's (or `key`'s) Receipt signature, for this pool's domain (or `contract`'s)."""
        message = eip712.Receipt(self.channel_id, cumulative_bytes, cumulative_amount)
        return eip712.sign(
            message, key or self.key, chain_id or self.chain_id, contract or self.pool.address
        )

    def close(self, cumulative_bytes, cumulative_amount, key, contract=None) -> bytes:
        """`key`'s CooperativeClose signature (the node operator's), for this pool's domain (or `contract`'s)."""
        message = eip712.CooperativeClose(self.channel_id, cumulative_bytes, cumulative_amount)
        return eip712.sign(message, key, self.chain_id, contract or self.pool.address)


class PoolDriver:
    """One pool and the Python mirror of its tree: deposits notes, proves and redeems them.

    Proofs are trapdoor proofs (trapdoor_keys.Trapdoor.prove): real Groth16 proofs for exactly the
    public inputs [root, nullifier_hash, ext_data_hash(node_id, signer, fee)].
    """

    def __init__(self, pool, token, trapdoor, chain, client, operator, make_signer):
        self.pool, self.token, self.trapdoor, self.chain = pool, token, trapdoor, chain
        self.client, self.operator, self.make_signer = client, operator, make_signer
        self.tree = LeanIMT()
        self.notes: list[Note] = []
        self._seeds = itertools.count(10_000)

    def deposit(self, note: Note | None = None, sender=None) -> Note:
        """Deposit `note` (default: a new deterministic one) from `sender` (default client)."""
        note = note or note_from_seed(next(self._seeds))
        sender = sender or self.client
        self.token.approve(self.pool, DENOMINATION, sender=sender)
        self.pool.deposit(note.commitment, DENOMINATION, sender=sender)
        self.tree.insert(note.commitment)
        self.notes.append(note)
        return note

    def prove(self, note_or_nh, node_id, signer, fee, root=None) -> list[int]:
        """A proof for (root (default: current), nullifier hash, ext_data_hash(node_id, signer, fee))."""
        nh = getattr(note_or_nh, "nullifier_hash", note_or_nh)
        root = self.tree.root if root is None else root
        return self.trapdoor.prove([root, nh, ext_data_hash(bytes(node_id), signer, fee)])

    def redeem(self, note, node_id, signer, fee=0, sender=None, root=None, proof=None):
        """Submit the redemption of `note` from `sender` (default operator); returns the receipt."""
        root = self.tree.root if root is None else root
        proof = proof or self.prove(note, node_id, signer, fee, root)
        return self.pool.redeem(
            proof, root, note.nullifier_hash, node_id, signer, fee, sender=sender or self.operator
        )

    def open(self, node_id, fee=0, sender=None, key=None) -> VoucherChannel:
        """Deposit a new note and redeem it into a channel with a fresh signer (or `key`)."""
        note = self.deposit()
        key, signer = (key, Account.from_key(key).address) if key else self.make_signer()
        receipt = self.redeem(note, node_id, signer, fee, sender=sender)
        return VoucherChannel(
            self.pool, bytes(receipt.return_value), bytes(node_id), signer, DENOMINATION - fee, key,
            note.nullifier_hash, self.chain.chain_id,
        )


@pytest.fixture
def make_vouchers(token, trapdoor, chain, client, operator, make_signer):
    """Factory: a `PoolDriver` for a given pool."""

    def _make(target):
        return PoolDriver(target, token, trapdoor, chain, client, operator, make_signer)

    return _make


@pytest.fixture
def vouchers(pool, make_vouchers):
    """A `PoolDriver` for `pool`."""
    return make_vouchers(pool)


@pytest.fixture
def as_signer(accounts, chain):
    """Factory: an impersonated ape account for a voucher channel's signer, with ether for gas."""

    def _as(voucher_channel):
        chain.set_balance(voucher_channel.signer, SIGNER_GAS_MONEY)
        return accounts[voucher_channel.signer]

    return _as
