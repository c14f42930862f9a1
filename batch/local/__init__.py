"""`python -m batch.local ...`: the documented alias of `python -m local_stack ...` (the local stack)."""
