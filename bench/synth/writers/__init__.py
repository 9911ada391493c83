"""One writer per native on-disk format (byte-deterministic)."""
