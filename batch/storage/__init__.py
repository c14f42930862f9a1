"""The output: where files go (`sink`: a local folder or S3), the run's control files and commits
(`commits`), the committed data read back (`readers`), and garbage collection (`gc`).

May import: `batch.core`, `batch.config.model`, `batch.aws`; `gc` also `batch.analyses.registry`.
"""
