"""Method adapters, one module (or package) per method; installed as `bench.methods`."""
