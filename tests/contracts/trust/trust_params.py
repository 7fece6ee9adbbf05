"""Deployment parameters the trust-contract fixtures and tests share (plain module: conftest is not importable)."""

# One day: long enough that no test crosses an epoch boundary by accident.
EPOCH_LENGTH = 86_400
# Failure reports from distinct challengers in one epoch that slash a node.
REPORT_QUORUM = 3
# Challengers drawn per node and epoch (reputation's assignment): above the ten of `crowd`, so the
# tests that do not test the draw see every challenger drawn.
REPORTS_PER_NODE = 12
# A quorum slash takes 10 % of the remaining stake.
SLASH_BPS = 1_000
# Guardian signatures a revocation needs: 2 of the 3 `guardians`.
GUARDIAN_QUORUM = 2
# Stake each panel challenger puts up, in token wei (above node_registry's minimum in the fixtures).
CHALLENGER_STAKE = 500 * 10**18
