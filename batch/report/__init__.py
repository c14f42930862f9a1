"""The HTML run report: a committed run's tables read back (`data`), summed up (`stats`), drawn as
charts (`charts`) and thumbnails (`thumbnails`), and written as one offline page (`page`).

May import: `batch.core`, `batch.config.model`, `batch.analyses.registry` (the tables), `batch.aws`,
`batch.storage`.
"""
