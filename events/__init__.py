"""Signed, hash-chained event records, Merkle checkpoints, replay and offline verification."""
