"""Warren's zero-knowledge side: Poseidon, the R1CS voucher circuit, Groth16 (setup, ceremony, prover,
verifier) and snarkjs-format export. See zk/README.md and zk/PUBLIC_INPUTS.md."""
