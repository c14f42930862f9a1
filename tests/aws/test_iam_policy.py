"""The IAM policies in configs/: valid JSON that allows every AWS call the job makes and nothing it must not.

The calls are read from the code where they live (`batch/aws/s3.py` is the only door to S3, the analyses'
REGISTRY, `batch/faces/sync.py` and `users.py` name every Rekognition operation of a run,
`batch/faces/admin.py` those of `rekbatch collection`), so a new call fails here until the policy grants
it. A small evaluator of the policy grammar the files use (Allow/Deny, wildcards, StringLike[IfExists],
StringEquals, Null) decides each request, with the placeholders filled in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from batch.analyses.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDERS = {
    "INPUT_BUCKET": "photo-bucket",
    "INPUT_PREFIX": "photos/2026/",
    "OUTPUT_BUCKET": "lake-bucket",
    "OUTPUT_PREFIX": "rekbatch/",
    "REGION": "eu-west-1",
    "ACCOUNT_ID": "123456789012",
    "SOURCE_COLLECTION_ID": "family-photos-v6",
    "TARGET_COLLECTION_ID": "family-photos-v7",
    "COLLECTION_ID": "family-photos",
    "KMS_KEY_ARN": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "INVENTORY_BUCKET": "inventory-bucket",
    "INVENTORY_PREFIX": "inventories/photo-bucket/nightly/",
    "PROJECT_NAME": "widgets",
}
IN_BUCKET = "arn:aws:s3:::photo-bucket"
OUT_BUCKET = "arn:aws:s3:::lake-bucket"
OUT = f"{OUT_BUCKET}/rekbatch/"
COLLECTION = "arn:aws:rekognition:eu-west-1:123456789012:collection/family-photos"
CONDITIONAL_PUT = {"s3:if-none-match": "*"}

Request = tuple[str, str, Mapping[str, str]]  # (action, resource ARN, condition context)

#: What each S3 client method in batch/aws/s3.py does for a run: the requests IAM sees.
JOB_S3_REQUESTS: dict[str, list[Request]] = {
    "list_objects_v2": [
        ("s3:ListBucket", IN_BUCKET, {"s3:prefix": "photos/2026/"}),  # the listing, check_readable
        ("s3:ListBucket", OUT_BUCKET, {"s3:prefix": "rekbatch/_commits/"}),  # committed runs
        ("s3:ListBucket", OUT_BUCKET, {"s3:prefix": "rekbatch/_runs/r1/"}),  # --resume: batch records
        # The commit (and --resume): are the files it lists all there?
        ("s3:ListBucket", OUT_BUCKET, {"s3:prefix": "rekbatch/labels/dt=2026-11-25/"}),
    ],
    "head_bucket": [("s3:ListBucket", OUT_BUCKET, {})],
    # --regions: which region the input bucket is in.
    "get_bucket_location": [
        ("s3:GetBucketLocation", IN_BUCKET, {})
    ],  # check_writable: HeadBucket needs ListBucket
    "head_object": [
        ("s3:GetObject", f"{IN_BUCKET}/photos/2026/people/ada.jpg", {}),  # a reference photo
        ("s3:GetObject", f"{IN_BUCKET}/photos/2026/a b/ü=1.jpg", {}),  # its ETag after its calls
    ],
    "get_object": [
        ("s3:GetObject", f"{IN_BUCKET}/photos/2026/a b/ü=1.jpg", {}),  # headers, bytes, thumbnails
        ("s3:GetObject", f"{OUT}_commits/r0.json", {}),  # manifests
        ("s3:GetObject", f"{OUT}images/dt=2026-11-25/r0-a1-000000.parquet", {}),  # incremental state
        # Reads with VersionId on a bucket that keeps versions; Rekognition's reads of `S3Object.Version`
        # are made with the caller's permissions and need the same.
        ("s3:GetObjectVersion", f"{IN_BUCKET}/photos/2026/a b/ü=1.jpg", {}),
        # An image's record, most often missing: 404 (not 403) thanks to ListBucket (see head_bucket).
        ("s3:GetObject", f"{OUT}_runs/r1/image-1-{'0' * 32}.json.gz", {}),
        ("s3:GetObject", f"{OUT}_runs/r1/batch-1-000000.json", {}),  # a re-run task's batch record
    ],
    "put_object": [
        ("s3:PutObject", f"{OUT}labels/dt=2026-11-25/r1-a1-000000.parquet", {}),
        ("s3:PutObject", f"{OUT}_runs/r1/batch-a1-000000.json", {}),
        ("s3:PutObject", f"{OUT}_runs/r1/image-1-{'0' * 32}.json.gz", {}),  # before each call, and once done
        ("s3:PutObject", f"{OUT}_runs/r1/attempt-1.json", CONDITIONAL_PUT),
        ("s3:PutObject", f"{OUT}_runs/r1/heartbeat-1.json", {}),  # rewritten while the attempt runs
        ("s3:PutObject", f"{OUT}_commits/r1.json", CONDITIONAL_PUT),  # the commit: create-only
        ("s3:PutObject", f"{OUT}_reports/r1.html", {}),
    ],
}
#: S3 methods only `rekbatch gc` calls.
GC_S3_REQUESTS: dict[str, list[Request]] = {
    "delete_objects": [("s3:DeleteObject", f"{OUT}labels/dt=2026-11-25/r9-a1-000000.parquet", {})],
}


def load_policy(name: str) -> dict[str, Any]:
    text = (ROOT / "configs" / name).read_text()
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    policy: dict[str, Any] = json.loads(text)
    return policy


def combined(*names: str) -> dict[str, Any]:
    return {"Statement": [s for name in names for s in load_policy(name)["Statement"]]}


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _condition_holds(operator: str, tests: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    for key, expected in tests.items():
        value = context.get(key)
        if operator == "Null":
            if (value is None) != (expected == "true"):
                return False
        elif operator in ("StringLike", "StringLikeIfExists"):
            if value is None:
                if operator == "StringLike":
                    return False
            elif not any(fnmatchcase(value, p) for p in _listed(expected)):
                return False
        elif operator == "StringEquals":
            if value not in _listed(expected):
                return False
        else:
            raise AssertionError(f"the evaluator does not know condition operator {operator}")
    return True


def allows(policy: Mapping[str, Any], request: Request) -> bool:
    """IAM's decision for one request: an explicit Deny wins, else any Allow, else denied."""
    action, resource, context = request
    allowed = False
    for statement in policy["Statement"]:
        applies = (
            any(fnmatchcase(action, a) for a in _listed(statement["Action"]))
            and any(fnmatchcase(resource, r) for r in _listed(statement["Resource"]))
            and all(_condition_holds(op, t, context) for op, t in statement.get("Condition", {}).items())
        )
        if applies and statement["Effect"] == "Deny":
            return False
        allowed = allowed or applies
    return allowed


def s3_methods_in_code() -> set[str]:
    source = (ROOT / "batch" / "aws" / "s3.py").read_text()
    called = set(re.findall(r"client\.(\w+)\(", source)) - {"get_paginator"}
    return called | set(re.findall(r'get_paginator\("(\w+)"\)', source))


#: The analyses that use a face collection (their policy is iam-collection.json).
COLLECTION_ANALYSES = ("index_faces", "face_search", "user_search")
#: Operations of those analyses that act on an image, not on the collection (the job policy allows them).
IMAGE_OPERATIONS = {"DetectFaces"}


def operations_called_in(module: str) -> set[str]:
    """The Rekognition operations a module calls: `_call("method", "Operation", ...)` or `pages(...)`."""
    source = (ROOT / "batch" / module).read_text()
    return set(re.findall(r'(?:_call|pages)\(\s*"\w+",\s*"(\w+)"', source))


def collection_operations_in_code() -> set[str]:
    called = operations_called_in("faces/sync.py") | operations_called_in("faces/users.py")
    analysed = {op for name in COLLECTION_ANALYSES for op in REGISTRY[name].operations}
    return called | analysed - IMAGE_OPERATIONS


def detect_operations() -> set[str]:
    return {op for name, analysis in REGISTRY.items() if name not in COLLECTION_ANALYSES
            for op in analysis.operations} | IMAGE_OPERATIONS  # fmt: skip


@pytest.mark.parametrize(
    "name",
    [
        "iam-policy.json",
        "iam-collection.json",
        "iam-collection-admin.json",
        "iam-collection-migrate.json",
        "iam-gc.json",
        "iam-kms.json",
        "iam-inventory.json",
        "iam-custom-labels.json",
    ],
)
def test_each_policy_is_valid_json_with_only_known_placeholders(name: str) -> None:
    policy = load_policy(name)
    assert policy["Version"] == "2012-10-17"
    assert all(
        s["Effect"] in ("Allow", "Deny") and s["Action"] and s["Resource"] for s in policy["Statement"]
    )
    assert not re.search(r"\b[A-Z]+_[A-Z_]+\b", json.dumps(policy)), "a placeholder was left unfilled"


def test_every_s3_method_the_code_calls_is_accounted_for() -> None:
    assert s3_methods_in_code() == set(JOB_S3_REQUESTS) | set(GC_S3_REQUESTS)


@pytest.mark.parametrize(
    "request_", [r for requests in JOB_S3_REQUESTS.values() for r in requests], ids=lambda r: f"{r[0]} {r[1]}"
)
def test_the_job_policy_allows_every_s3_request_of_a_run(request_: Request) -> None:
    assert allows(load_policy("iam-policy.json"), request_)


def test_the_job_policy_allows_every_analysis_but_no_collection_operation() -> None:
    policy = load_policy("iam-policy.json")
    for operation in detect_operations():
        assert allows(policy, (f"rekognition:{operation}", "*", {})), operation
    for operation in collection_operations_in_code() | operations_called_in("faces/admin.py"):
        assert not allows(policy, (f"rekognition:{operation}", COLLECTION, {})), operation


def test_the_job_policy_allows_the_service_quotas_calls_of_a_run() -> None:
    """Each run reads its quotas (`batch/aws/service_quotas.py`): each operation it names is allowed."""
    source = (ROOT / "batch" / "aws" / "service_quotas.py").read_text()
    methods = set(re.findall(r"get_paginator\(\"(\w+)\"\)", source))
    assert methods == {"list_service_quotas"}
    for method in methods:
        action = "servicequotas:" + "".join(part.title() for part in method.split("_"))
        assert allows(load_policy("iam-policy.json"), (action, "*", {})), action


def test_the_job_policy_holds_no_delete_and_no_wildcard_action() -> None:
    policy = load_policy("iam-policy.json")
    actions = [a for s in policy["Statement"] if s["Effect"] == "Allow" for a in _listed(s["Action"])]
    assert not [a for a in actions if "Delete" in a or "*" in a]
    for request in GC_S3_REQUESTS["delete_objects"]:
        assert not allows(policy, request)


@pytest.mark.parametrize(
    "request_",
    [
        ("s3:ListBucket", IN_BUCKET, {"s3:prefix": "private/"}),  # another prefix of the input bucket
        ("s3:ListBucket", IN_BUCKET, {}),  # the whole input bucket
        ("s3:GetObject", f"{IN_BUCKET}/private/x.jpg", {}),
        ("s3:GetObjectVersion", f"{IN_BUCKET}/private/x.jpg", {}),
        ("s3:GetObjectVersion", f"{OUT}_commits/r1.json", {}),  # older versions of the output: never
        ("s3:PutObject", f"{IN_BUCKET}/photos/2026/x.jpg", {}),  # never writes the input
        ("s3:PutObject", f"{OUT_BUCKET}/elsewhere/x.parquet", {}),  # nor outside the output prefix
        ("s3:GetObject", f"{OUT_BUCKET}/elsewhere/x.parquet", {}),
        ("s3:ListBucket", OUT_BUCKET, {"s3:prefix": "elsewhere/"}),
        ("s3:PutObject", f"{OUT}_commits/r1.json", {}),  # overwriting a commit: create-only
        ("s3:DeleteObject", f"{OUT}_commits/r1.json", {}),
    ],
    ids=lambda r: f"{r[0]} {r[1]} {dict(r[2])}",
)
def test_the_job_policy_denies_what_the_job_never_does(request_: Request) -> None:
    assert not allows(load_policy("iam-policy.json"), request_)


def test_the_collection_policy_adds_what_the_face_analyses_call_on_one_collection() -> None:
    policy = combined("iam-policy.json", "iam-collection.json")
    for operation in collection_operations_in_code():
        assert allows(policy, (f"rekognition:{operation}", COLLECTION, {})), operation
        other = COLLECTION.replace("family-photos", "someone-elses")
        assert not allows(policy, (f"rekognition:{operation}", other, {})), operation
    assert not allows(policy, ("rekognition:DeleteCollection", COLLECTION, {}))


def test_the_collection_admin_policy_allows_the_commands_calls_and_changes_no_faces() -> None:
    policy = load_policy("iam-collection-admin.json")
    # ListFaces: `face_pages`, which the commands share with the job's sync (collections.py).
    called = operations_called_in("faces/admin.py") | {"ListFaces"}
    assert "ListCollections" in called
    # ListCollections names no collection: IAM evaluates it against "*".
    assert allows(policy, ("rekognition:ListCollections", "*", {}))
    other = COLLECTION.replace("family-photos", "someone-elses")
    for operation in called - {"ListCollections"}:
        assert allows(policy, (f"rekognition:{operation}", COLLECTION, {})), operation
        # `list` describes every collection; only the named one may be deleted.
        assert allows(policy, (f"rekognition:{operation}", other, {})) == (operation != "DeleteCollection")
    for operation in collection_operations_in_code() - called:  # indexing, deleting faces, searching
        assert not allows(policy, (f"rekognition:{operation}", COLLECTION, {})), operation


def test_the_collection_commands_policies_allow_reading_the_quotas() -> None:
    """`rekbatch collection ...` resolves its quotas as a run does (`batch/run/quotas.py`)."""
    for name in ("iam-collection-admin.json", "iam-collection-migrate.json"):
        assert allows(load_policy(name), ("servicequotas:ListServiceQuotas", "*", {})), name


def test_the_migrate_policy_fills_the_target_and_may_only_delete_the_source() -> None:
    """`rekbatch collection migrate` (batch/cli/migrate.py) with the job policy's S3 access."""
    from batch.cli.migrate import OPERATIONS

    policy = combined("iam-policy.json", "iam-collection-migrate.json")
    source, target = (COLLECTION.replace("family-photos", f"family-photos-{v}") for v in ("v6", "v7"))
    for operation in set(OPERATIONS) - {"DeleteCollection"}:
        assert allows(policy, (f"rekognition:{operation}", target, {})), operation
    assert allows(policy, ("rekognition:DescribeCollection", source, {}))
    assert allows(policy, ("rekognition:DeleteCollection", source, {}))
    # DeleteFaces on TARGET: a rerun deletes the faces a killed attempt stored for an older version.
    assert not allows(policy, ("rekognition:DeleteCollection", target, {}))
    for operation in ("IndexFaces", "DeleteFaces", "CreateCollection"):
        assert not allows(policy, (f"rekognition:{operation}", source, {})), operation
    assert not allows(policy, ("rekognition:IndexFaces", COLLECTION, {}))


def test_the_gc_policy_lists_reads_manifests_and_deletes_only_uncommitted_files() -> None:
    policy = load_policy("iam-gc.json")
    assert allows(policy, JOB_S3_REQUESTS["list_objects_v2"][1])
    assert allows(policy, JOB_S3_REQUESTS["get_object"][1])
    for request in GC_S3_REQUESTS["delete_objects"]:
        assert allows(policy, request)
    assert not allows(policy, ("s3:DeleteObject", f"{OUT}_commits/r1.json", {}))
    assert not allows(policy, ("s3:DeleteObject", f"{IN_BUCKET}/photos/2026/a.jpg", {}))
    assert not allows(policy, ("s3:PutObject", f"{OUT}labels/x.parquet", {}))


def test_the_kms_policy_lets_s3_encrypt_and_decrypt_with_the_output_key_only() -> None:
    policy = load_policy("iam-kms.json")
    via_s3 = {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert allows(policy, (action, PLACEHOLDERS["KMS_KEY_ARN"], via_s3))
        assert not allows(policy, (action, PLACEHOLDERS["KMS_KEY_ARN"], {}))  # not outside S3
    assert not allows(policy, ("kms:Decrypt", "arn:aws:kms:eu-west-1:123456789012:key/other", via_s3))


def test_the_inventory_policy_reads_the_report_and_nothing_else() -> None:
    policy = load_policy("iam-inventory.json")
    report = "arn:aws:s3:::inventory-bucket/inventories/photo-bucket/nightly/"
    for key in ("2026-11-25T01-00Z/manifest.json", "data/0b5c5f3e-2a5e-4d0e-9e43-6d1c0e0a1b2c.csv.gz"):
        assert allows(policy, ("s3:GetObject", f"{report}{key}", {}))  # `--inventory`: manifest, data files
    assert not allows(policy, ("s3:GetObject", "arn:aws:s3:::inventory-bucket/other/manifest.json", {}))
    assert not allows(policy, ("s3:ListBucket", "arn:aws:s3:::inventory-bucket", {}))
    assert not allows(policy, ("s3:PutObject", f"{report}data/x.csv.gz", {}))


def test_the_custom_labels_policy_checks_starts_and_stops_the_projects_models_only() -> None:
    policy = load_policy("iam-custom-labels.json")
    called = operations_called_in("analyses/model_hosting.py")
    assert called == {
        "DescribeProjects",
        "DescribeProjectVersions",
        "StartProjectVersion",
        "StopProjectVersion",
    }
    project = "arn:aws:rekognition:eu-west-1:123456789012:project/widgets"
    version = f"{project}/version/widgets.2026-01-01T10.00.00/1767261600000"
    assert allows(policy, ("rekognition:DescribeProjects", "*", {}))
    assert allows(policy, ("rekognition:DescribeProjectVersions", f"{project}/1767000000000", {}))
    for operation in ("StartProjectVersion", "StopProjectVersion"):
        assert allows(policy, (f"rekognition:{operation}", version, {})), operation
        other = version.replace("widgets", "gadgets")
        assert not allows(policy, (f"rekognition:{operation}", other, {})), operation
    assert not allows(load_policy("iam-policy.json"), ("rekognition:StartProjectVersion", version, {}))
