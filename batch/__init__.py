"""rekognition-batch: an S3 prefix of images -> Amazon Rekognition Image -> Parquet tables."""

__version__ = "0.1.0"
