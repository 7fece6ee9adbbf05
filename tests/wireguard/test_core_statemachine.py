"""Property test: two devices over a hostile network (loss, duplication, reordering, time jumps, load).

Hypothesis drives random sequences of sends, deliveries, drops, replays and clock jumps. Safety
invariants hold after every step (no inner packet delivered twice or invented, no exception, only
explainable drop reasons); liveness is checked whenever the network "heals": with every datagram
delivered and time passing normally, a sender that keeps sending gets through both ways within
REKEY_TIMEOUT-scale delays, whatever state the sessions were left in.
"""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agents.wireguard.perf import ALICE_IP, BOB_IP, LoopbackPair, ip_packet

#: Reasons an honest but lossy, duplicating, reordering network can cause; anything else is a bug.
EXPLAINABLE_DROPS = {"replay", "replayed_initiation", "initiation_flood", "unknown_receiver", "expired_session",
                     "unexpected_cookie", "bad_cookie_reply", "rate_limited"}
#: Seconds of simulated healthy network the liveness check may use (a retransmission or two).
HEAL_SECONDS = 30


class TwoDevicesOverBadNetwork(RuleBasedStateMachine):
    """Alice and Bob exchanging numbered packets through an adversarial in-memory network."""

    @initialize()
    def start(self):
        self.pair = LoopbackPair()
        self.in_flight: list[tuple[object, bytes, tuple[str, int]]] = []
        self.sent = {"alice": set(), "bob": set()}
        self.serial = 0

    def _packet(self, sender: str) -> bytes:
        self.serial += 1
        source, destination = (ALICE_IP, BOB_IP) if sender == "alice" else (BOB_IP, ALICE_IP)
        self.sent[sender].add(self.serial)
        return ip_packet(source, destination, self.serial.to_bytes(8, "big"))

    def _collect(self):
        for device in (self.pair.alice, self.pair.bob):
            for datagram, endpoint in device.drain_outbox():
                self.in_flight.append((device, datagram, endpoint))

    def _send(self, sender: str):
        device = self.pair.alice if sender == "alice" else self.pair.bob
        result = device.encapsulate(self._packet(sender), self.pair.now)
        if result is not None:
            self.in_flight.append((device, *result))
        self._collect()

    @rule(sender=st.sampled_from(["alice", "bob"]))
    def send(self, sender):
        self._send(sender)

    @rule(pick=st.integers(0, 10**6))
    def deliver(self, pick):
        if self.in_flight:
            self.pair.carry(*self.in_flight.pop(pick % len(self.in_flight)))
            self._collect()

    @rule(pick=st.integers(0, 10**6))
    def lose(self, pick):
        if self.in_flight:
            self.in_flight.pop(pick % len(self.in_flight))

    @rule(pick=st.integers(0, 10**6))
    def replay(self, pick):
        if self.in_flight:
            self.in_flight.append(self.in_flight[pick % len(self.in_flight)])

    @rule(who=st.sampled_from(["alice", "bob"]), loaded=st.booleans())
    def load_changes(self, who, loaded):
        (self.pair.alice if who == "alice" else self.pair.bob).under_load = loaded

    @rule(seconds=st.sampled_from([0.01, 0.5, 3, 6, 11, 16, 60, 125, 181, 600]))
    def time_passes(self, seconds):
        self.pair.now += seconds
        self.pair.tick()
        self._collect()

    def _deliver_everything(self):
        for _ in range(1000):
            if not self.in_flight:
                return
            self.pair.carry(*self.in_flight.pop(0))
            self._collect()
        raise AssertionError("the devices kept talking on a healed network")

    @rule()
    def heal_and_check_liveness(self):
        # In-flight data can be lost for good (a session it used may be retired meanwhile, as in
        # wireguard-go), so liveness means: on a healed network, a sender that keeps sending (as
        # any application above does) gets packets through within a bounded time.
        self._deliver_everything()
        for sender, receiver_log in (("alice", self.pair.bob_received), ("bob", self.pair.alice_received)):
            first = self.serial + 1
            for _ in range(HEAL_SECONDS * 2):
                self._send(sender)
                self._deliver_everything()
                if any(int.from_bytes(p[20:], "big") >= first for p in receiver_log):
                    break
                self.pair.now += 0.5
                self.pair.tick()
                self._collect()
            else:
                raise AssertionError(f"nothing {sender} sent from packet {first} on arrived on a healed network")

    @invariant()
    def nothing_delivered_twice_or_invented(self):
        if not hasattr(self, "pair"):
            return
        for log, sender in ((self.pair.bob_received, "alice"), (self.pair.alice_received, "bob")):
            serials = [int.from_bytes(p[20:], "big") for p in log]
            assert len(serials) == len(set(serials))
            assert set(serials) <= self.sent[sender]

    @invariant()
    def drops_are_explainable(self):
        if not hasattr(self, "pair"):
            return
        for device in (self.pair.alice, self.pair.bob):
            assert set(device.drop_counters) <= EXPLAINABLE_DROPS, device.drop_counters


TwoDevicesOverBadNetwork.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_two_devices_over_bad_network = TwoDevicesOverBadNetwork.TestCase
