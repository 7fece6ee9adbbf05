"""Constants shared by the overlay tests (imported by name: tests/overlay is on sys.path)."""

NOW = 1_800_000_000  # a fixed unix time: the fake clock of record tests
REVOCATION_REGISTRY = "0x" + "5e" * 20  # stands in for the revocation_registry address (EIP-712 domain)
CHAIN_ID = 31337  # anvil's chain id
