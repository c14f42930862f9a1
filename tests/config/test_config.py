"""Configuration: defaults, TOML, environment and flags in that order, validated once with named keys."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from batch.config.loader import config_digest, load_account_config, load_config
from batch.config.model import RunConfig
from batch.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
RUN = {"run.input": "s3://bucket-a/photos/", "run.output": "out"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config(environ={}, overrides=RUN)
    assert config.bucket == "bucket-a"
    assert config.prefix == "photos/"
    assert config.analyses == ("labels", "faces", "text", "moderation", "celebrities")
    assert config.rekognition.image_source == "s3"
    assert config.analysis_settings["faces"].attributes == ("ALL",)


def test_the_documented_default_file_equals_the_built_in_defaults() -> None:
    from_file = load_config(ROOT / "configs" / "default.toml", environ={}, overrides=RUN)
    assert from_file == load_config(environ={}, overrides=RUN)


def test_every_shipped_config_loads() -> None:
    for path in (ROOT / "configs").glob("*.toml"):
        load_config(path, environ={}, overrides=RUN)


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path, "[rekognition]\ntps = 5\nread_timeout = 9\n[analyses.labels]\nmin_confidence = 70\n"
    )
    env = {"REKBATCH_REKOGNITION__TPS": "7", "REKBATCH_ANALYSES__LABELS__MIN_CONFIDENCE": "80"}
    config = load_config(path, environ=env, overrides={**RUN, "rekognition.tps": 9.0})
    assert config.rekognition.tps == 9.0  # flag over environment over file
    assert config.rekognition.read_timeout == 9.0  # file over default
    assert config.analysis_settings["labels"].min_confidence == 80  # environment over file


def test_quotas_per_operation_and_the_tps_flag_for_all(tmp_path: Path) -> None:
    path = write(tmp_path, "[rekognition]\ntps = 20\n[quotas]\nfaces = 5\n")
    config = load_config(path, environ={}, overrides=RUN)
    assert (config.quota("faces"), config.quota("labels")) == (5.0, 20.0)
    # The CLI's --tps sets every operation's quota: it sets rekognition.tps and empties [quotas].
    flagged = load_config(path, environ={}, overrides={**RUN, "rekognition.tps": 9.0, "quotas": {}})
    assert (flagged.quota("faces"), flagged.quota("labels")) == (9.0, 9.0)
    with pytest.raises(ConfigError, match=r"quotas\.faces"):
        load_config(write(tmp_path, "[quotas]\nfaces = 0\n"), environ={}, overrides=RUN)


def test_who_set_the_quota_is_kept(tmp_path: Path) -> None:
    """Unset, a quota is read from Service Quotas (`batch.run.quotas`): the config says who set each."""
    unset = load_config(write(tmp_path, "[quotas]\nfaces = 5\n"), environ={}, overrides=RUN)
    assert (unset.quota_source("faces"), unset.quota_source("labels")) == ("config", "")
    from_file = load_config(write(tmp_path, "[rekognition]\ntps = 20\n"), environ={}, overrides=RUN)
    from_env = load_config(environ={"REKBATCH_REKOGNITION__TPS": "20"}, overrides=RUN)
    assert from_file.quota_source("labels") == from_env.quota_source("labels") == "config"
    overrides = {**RUN, "rekognition.tps": 9.0, "quotas": {}}
    flagged = load_config(environ={}, overrides=overrides, flags={"rekognition.tps": "--tps"})
    assert flagged.quota_source("labels") == "flag"


def test_environment_lists_and_strings() -> None:
    env = {"REKBATCH_RUN__ANALYSES": '["labels", "text"]', "REKBATCH_DASK__SCHEDULER": "tcp://h:8786"}
    config = load_config(environ=env, overrides=RUN)
    assert config.analyses == ("labels", "text")
    assert config.dask.scheduler == "tcp://h:8786"


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[rekognition]\ntps = -1\n", "rekognition.tps"),
        ("[rekognition]\ntps = 'fast'\n", "rekognition.tps"),
        ("[rekognition]\nspeed = 3\n", "rekognition.speed"),
        ("[rekognition]\nimage_source = 'ftp'\n", "rekognition.image_source"),
        ("[rekognition]\nconvert_to_jpeg = 'no'\n", "rekognition.convert_to_jpeg"),
        ("[rekognition]\nmax_convert_bytes = 0\n", "rekognition.max_convert_bytes"),
        ("[rekognition]\nread_timeout = 60\n", "rekognition.silent_abort_seconds"),  # not above it
        ("[dask]\nbatch_size = 0\n", "dask.batch_size"),
        ("[dask]\nshutdown_grace_seconds = -1\n", "dask.shutdown_grace_seconds"),
        ("[analyses.labels]\nmin_confidence = 101\n", "analyses.labels.min_confidence"),
        ("[analyses.labels]\ncolour = 1\n", "analyses.labels.colour"),
        ("[analyses.poetry]\nx = 1\n", "analyses.poetry"),
        ("[run]\nanalyses = ['labels', 'poems']\n", "run.analyses"),
        ("[run]\nrun_id = '2026-11-25T00:00'\n", "run.run_id"),
        ("[pricing]\nlabels = -0.1\n", "pricing.labels"),
        ("[output]\nsse = 'kms'\n", "output.sse"),
        ("[output]\nkms_key_id = 'arn:aws:kms:eu-west-1:1:key/k'\n", "output.kms_key_id"),  # no aws:kms
        ("[output]\nsse = 'AES256'\nkms_key_id = 'arn:aws:kms:eu-west-1:1:key/k'\n", "output.kms_key_id"),
        ("[nonsense]\n", "nonsense"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, toml: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(write(tmp_path, toml), environ={}, overrides=RUN)


def test_output_encryption_settings_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[output]\nsse = 'aws:kms'\nkms_key_id = 'arn:aws:kms:eu-west-1:1:key/k'\n")
    config = load_config(path, environ={}, overrides=RUN)
    assert (config.output_options.sse, config.output_options.kms_key_id) == (
        "aws:kms",
        "arn:aws:kms:eu-west-1:1:key/k",
    )
    config = load_config(environ={"REKBATCH_OUTPUT__SSE": "AES256"}, overrides=RUN)
    assert (config.output_options.sse, config.output_options.kms_key_id) == ("AES256", "")


def test_input_must_be_an_s3_url_and_output_is_required() -> None:
    with pytest.raises(ConfigError, match=r"run\.input"):
        load_config(environ={}, overrides={"run.input": "/local/path", "run.output": "out"})
    with pytest.raises(ConfigError, match=r"run\.output"):
        load_config(environ={}, overrides={"run.input": "s3://bucket-a/p/"})
    # A dry run writes nothing, so it needs no output.
    assert load_config(environ={}, overrides={"run.input": "s3://bucket-a/p/", "run.dry_run": True}).dry_run


def test_the_inventory_must_be_an_s3_manifest_json_and_is_checked_once_at_load() -> None:
    manifest = "s3://reports/inv/bucket-a/nightly/2026-11-25T01-00Z/manifest.json"
    config = load_config(environ={}, overrides={**RUN, "run.inventory": manifest})
    assert config.inventory == manifest
    flags = {"run.inventory": "--inventory"}
    with pytest.raises(
        ConfigError, match=r"run\.inventory: must be an inventory's .*manifest\.json.* --inventory"
    ):
        load_config(environ={}, overrides={**RUN, "run.inventory": "s3://reports/inv/"}, flags=flags)
    with pytest.raises(ConfigError, match=r"run\.inventory: expected s3://"):
        load_config(environ={}, overrides={**RUN, "run.inventory": "/tmp/manifest.json"})
    variable = {"REKBATCH_RUN__INVENTORY": manifest}
    assert load_config(environ=variable, overrides=RUN).inventory == manifest
    assert config_digest(config) == config_digest(load_config(environ={}, overrides=RUN))  # same results


def test_prune_is_refused_with_an_inventory() -> None:
    """A stale inventory missed a key written since: pruning deleted the faces of an image still there,
    and the next listing run paid IndexFaces for it again."""
    overrides = {
        **RUN,
        "run.analyses": ["index_faces"],
        "analyses.index_faces.collection": "c",
        "run.prune": True,
    }
    assert load_config(environ={}, overrides=overrides).prune
    with pytest.raises(ConfigError, match=r"^run\.prune: an inventory is up to 48 h older than the bucket"):
        load_config(environ={}, overrides={**overrides, "run.inventory": "s3://reports/inv/manifest.json"})


def test_account_commands_need_no_input_but_check_every_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[quotas]\nindex_faces = 3\n[pricing]\nface_storage_month = 0.5\n")
    config = load_account_config(path, environ={"REKBATCH_REKOGNITION__REGION": "eu-west-1"})
    assert (config.quota("index_faces"), config.prices["face_storage_month"]) == (3.0, 0.5)
    assert config.rekognition.region == "eu-west-1"
    with pytest.raises(ConfigError, match=r"rekognition\.tps"):
        load_account_config(environ={"REKBATCH_REKOGNITION__TPS": "-1"})


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", environ={}, overrides=RUN)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[rekognition\n"), environ={}, overrides=RUN)


def test_digest_follows_what_changes_results_only() -> None:
    base = load_config(environ={}, overrides=RUN)
    other_output = load_config(environ={}, overrides={**RUN, "run.output": "elsewhere", "run.limit": 3})
    other_settings = load_config(environ={"REKBATCH_ANALYSES__LABELS__MIN_CONFIDENCE": "90"}, overrides=RUN)
    no_conversion = load_config(environ={"REKBATCH_REKOGNITION__CONVERT_TO_JPEG": "false"}, overrides=RUN)
    assert not no_conversion.rekognition.convert_to_jpeg
    assert config_digest(base) == config_digest(other_output)
    assert config_digest(base) != config_digest(other_settings)
    assert config_digest(base) != config_digest(no_conversion)  # which images are analysed depends on it


def test_default_toml_parses_and_lists_every_section() -> None:
    data = tomllib.loads((ROOT / "configs" / "default.toml").read_text())
    assert {"input", "rekognition", "dask", "output", "analyses", "pricing"} <= set(data)
    assert isinstance(load_config(environ={}, overrides=RUN), RunConfig)


def test_resume_full_and_max_error_rate_are_checked() -> None:
    config = load_config(environ={}, overrides={**RUN, "run.resume": "night-1", "run.max_error_rate": 0.05})
    assert (config.resume, config.full, config.max_error_rate) == ("night-1", False, 0.05)
    with pytest.raises(
        ConfigError,
        match=r"^run\.resume: resumes run 'a' but run\.run_id is 'b' \(from override run\.resume\)$",
    ):
        load_config(environ={}, overrides={**RUN, "run.resume": "a", "run.run_id": "b"})
    with pytest.raises(ConfigError, match=r"^run\.resume: only letters"):
        load_config(environ={}, overrides={**RUN, "run.resume": "a:b"})
    with pytest.raises(
        ConfigError,
        match=r"^run\.max_error_rate: must be in 0\.\.1, got 1\.5 "
        r"\(from environment variable REKBATCH_RUN__MAX_ERROR_RATE\)$",
    ):
        load_config(environ={"REKBATCH_RUN__MAX_ERROR_RATE": "1.5"}, overrides=RUN)


def test_the_production_example_is_a_valid_config_for_a_run_on_aws() -> None:
    config = load_config(ROOT / "configs" / "prod.example.toml", environ={})
    assert (config.input[:5], config.output[:5]) == ("s3://", "s3://")
    assert config.rekognition.region  # a real run needs one: no lookup surprises on a scheduler's host
    assert config.max_error_rate < 1  # so that cron and Airflow alert on failed images
    assert config.output_options.sse == "aws:kms"
    assert (config.dry_run, config.full, config.limit) == (False, False, 0)


def test_commit_every_from_the_file_the_environment_or_the_flag(tmp_path: Path) -> None:
    from batch.core.segments import CommitEvery

    path = write(tmp_path, '[run]\ncommit_every = "6h"\n')
    assert load_config(path, environ={}, overrides=RUN).commit_every == CommitEvery(seconds=21600)
    env = {"REKBATCH_RUN__COMMIT_EVERY": "1000images"}
    assert load_config(path, environ=env, overrides=RUN).commit_every == CommitEvery(images=1000)
    flag = {**RUN, "run.commit_every": "30m"}
    assert load_config(path, environ=env, overrides=flag).commit_every == CommitEvery(seconds=1800)
    assert (
        load_config(environ={"REKBATCH_RUN__COMMIT_EVERY": "0"}, overrides=RUN).commit_every == CommitEvery()
    )
    with pytest.raises(ConfigError, match=r"run.commit_every: expected a duration .* got '6 hours'"):
        load_config(environ={}, overrides={**RUN, "run.commit_every": "6 hours"})
    # Not part of what the results depend on: a resume may commit more or less often.
    assert config_digest(load_config(path, environ={}, overrides=RUN)) == config_digest(
        load_config(environ={}, overrides=RUN)
    )


def test_regions_are_a_list_that_includes_the_runs_region() -> None:
    run = {"run.input": "s3://bucket/in/", "run.output": "/tmp/out", "rekognition.region": "us-east-1"}
    flags = {"rekognition.regions": "--regions"}
    both = load_config(overrides={**run, "rekognition.regions": "us-east-1, us-west-2"}, flags=flags)
    assert both.rekognition.regions == ("us-east-1", "us-west-2")
    assert load_config(overrides=run).rekognition.regions == ()
    for value, problem in (
        ("us-west-2", r"must include rekognition\.region \(us-east-1\)"),
        ("us-east-1,us-east-1", "a region is listed twice"),
        ("us-east-1,US-WEST-2", "'US-WEST-2' is not a region name"),
    ):
        with pytest.raises(ConfigError, match=rf"rekognition\.regions: {problem}.*\(from flag --regions\)"):
            load_config(overrides={**run, "rekognition.regions": value}, flags=flags)
