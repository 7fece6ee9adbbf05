"""Economics of Warren: the rewards and price model behind docs/ECONOMICS.md (pure, no chain)."""
