"""The local stack: moto's S3 server plus our own Rekognition-compatible endpoint, both on loopback.

    python -m batch.local stack          # both servers, a seeded bucket, prints the `export` lines
    python -m batch.local rekognition    # the endpoint alone
    python -m batch.local s3             # moto's S3 server alone

From Python: `batch.local.stack.LocalStack` and `batch.local.stack.seed_samples`. See docs/local-stack.md.
"""

from __future__ import annotations
