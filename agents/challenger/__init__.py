"""Proof-of-bandwidth challenger: a pure challenge core (plan, payload, verdict, proposal) and its runtime."""
