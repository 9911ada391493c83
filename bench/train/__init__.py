"""The training platform: shared data kinds (`data`), `bench train`'s request and dispatch
(`run`), and the loop every method's task runs in (`loop`)."""
