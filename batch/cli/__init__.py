"""The command line, `rekbatch` (also `python -m batch`): `main` parses the flags of every command and
maps each failure to its exit code; `collection` holds the `rekbatch collection` commands.

May import: anything in `batch` (lazily where a command needs Dask, DuckDB or matplotlib).
"""
