"""Warren's on-chain half as seen from Python: EIP-712 types, signing, contract bindings."""
