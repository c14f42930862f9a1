"""Face collections and reference faces, the driver side of the face analyses: keeping a collection
equal to the bucket (`sync`), the admin commands' calls (`admin`), the collection tables' rows
(`rows`), and the reference photos of face comparison (`references`).

May import: `batch.core`, `batch.config.model`, `batch.analyses.base` and `face_crops`, `batch.aws`.
"""
