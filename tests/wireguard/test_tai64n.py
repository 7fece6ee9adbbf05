"""TAI64N labels: ordering and the wireguard-go whitening."""

from agents.wireguard.tai64n import TAI64N_LENGTH, tai64n, tai64n_to_unix


def test_tai64n__twelve_bytes_with_tai_label():
    label = tai64n(0.0)
    assert len(label) == TAI64N_LENGTH
    assert label[:8] == ((1 << 62) + 10).to_bytes(8, "big")


def test_tai64n__byte_order_follows_time():
    times = [1_700_000_000.0, 1_700_000_000.02, 1_700_000_001.0, 1_800_000_000.5]
    labels = [tai64n(t) for t in times]
    assert labels == sorted(labels) and len(set(labels)) == len(labels)


def test_tai64n__nanoseconds_whitened_to_2_pow_24():
    assert tai64n(1_700_000_000.001) == tai64n(1_700_000_000.0)
    assert abs(tai64n_to_unix(tai64n(1_700_000_000.5)) - 1_700_000_000.5) < 0.02
