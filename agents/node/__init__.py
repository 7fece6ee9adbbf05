"""The node agent: `warren node ...` (session core, exit + policy + DNS, metering, store, settlement)."""
