"""The local stack: moto's S3 server plus our own Rekognition-compatible endpoint, both on loopback.

    python -m local_stack stack          # both servers, a seeded bucket, prints the `export` lines
    python -m local_stack rekognition    # the endpoint alone
    python -m local_stack s3             # moto's S3 server alone

From Python: `local_stack.stack.LocalStack` and `local_stack.stack.seed_samples`. See docs/local-stack.md.
"""

from __future__ import annotations
