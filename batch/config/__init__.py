"""The configuration: `model`, the frozen value objects a run is given (validated when built), and
`loader`, which builds them once from defaults, a TOML file, the environment and flags.

May import: `model` only `batch.core`; `loader` also `batch.analyses.registry` (each analysis's
settings, prices and checks).
"""
