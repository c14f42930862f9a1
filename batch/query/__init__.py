"""Reading the output: DuckDB views and Athena DDL over exactly the committed files (`views`), and the
`rekbatch sql` prompt (`shell`).

May import: `batch.core`, `batch.analyses.registry` (the tables), `batch.storage`.
"""
