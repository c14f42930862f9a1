"""The AWS edges, each behind one small module: S3 (`s3`), Rekognition (`rekognition`: the client, the
rate-limited and retried caller), the cluster-wide quota (`ratelimit`), the Dask cluster (`executor`),
how an image is sent (`image_source`), and the SDK's loggers (`logs`).

May import: `batch.core`, `batch.config.model`.
"""
