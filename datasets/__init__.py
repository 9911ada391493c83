"""Dataset adapters, one module per dataset; installed as `bench.datasets`."""
