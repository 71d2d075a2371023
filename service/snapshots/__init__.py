"""Hot swap: the registry, loading and verifying a snapshot, the canary, the replica."""
