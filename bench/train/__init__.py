"""The shared training loop (`bench.train.loop`) that `bench train METHOD` runs."""
