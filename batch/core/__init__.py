"""The pure core: the rules of the domain, without I/O.

Image headers and checks, conversion, box geometry, selection of keys, table schemas and row builders,
manifests and the ledger, incremental state, retry classification, quota arithmetic, AIMD, concurrency,
the call timeline, rates over a sliding window and the progress line, external ids, and the exception
tree (`errors`).

May import: only `batch.core` and `batch.config.model` (tests/test_layout.py checks it).
"""
