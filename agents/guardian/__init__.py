"""Guardian tool: review a revocation proposal's evidence, sign its EIP-712 Revocation, submit a quorum."""
