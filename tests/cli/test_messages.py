"""`rekbatch run` with a bad setting: exit 2 and one line naming the key, the variable or flag or file it
came from, the expected form and the value (the config is checked before anything is called)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch.cli.main import main

INPUT = "s3://bucket-a/photos/"


@pytest.fixture(autouse=True)
def _no_rekbatch_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("REKBATCH_"):
            monkeypatch.delenv(name)


def one_line(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one line `rekbatch run ARGS` prints on stderr; it must exit 2."""
    code = main(["run", *args])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.count("\n") == 1, err
    return err.removeprefix("rekbatch: error: ").rstrip("\n")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("s3://My_Bucket/x", "has characters S3 does not allow: 'BM_' (uppercase is not allowed)"),
        ("s3://ab/x", "is 2 characters long, not 3 to 63"),
        ("s3://-bucket/x", "must start and end with a letter or digit"),
        ("s3://my..bucket/x", "has two periods in a row"),
        ("s3://192.168.5.4/x", "is formatted as an IP address"),
        ("s3://xn--bucket/x", "uses 'xn--', which S3 reserves"),
        ("s3:///x", "is empty"),
    ],
)
def test_an_invalid_bucket_name_says_what_is_wrong_with_it(
    capsys: pytest.CaptureFixture[str], url: str, problem: str
) -> None:
    bucket = url.removeprefix("s3://").partition("/")[0]
    assert one_line(capsys, "--input", url, "--dry-run") == (
        f"run.input: {url!r}: bucket name {bucket!r} {problem}; S3 bucket names are 3-63 lowercase "
        "letters, digits, '.' and '-', starting and ending with a letter or digit (from flag --input)"
    )


def test_a_url_without_s3_says_the_expected_form(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line(capsys, "--input", INPUT, "--output", "s3:/out/tables")
    assert line == "run.output: expected s3://BUCKET/PREFIX, got 's3:/out/tables' (from flag --output)"


def test_a_misspelt_variable_is_named_with_the_closest_valid_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REKBATCH_REKOGNITON__TPS", "20")
    line = one_line(capsys, "--input", INPUT, "--dry-run")
    assert line.startswith("environment variable REKBATCH_REKOGNITON__TPS: rekogniton: unknown section")
    assert line.endswith("; did you mean REKBATCH_REKOGNITION__TPS?")


def test_a_misspelt_key_in_a_variable_gets_the_closest_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REKBATCH_DASK__N_WORKER", "2")
    line = one_line(capsys, "--input", INPUT, "--dry-run")
    assert line.startswith("environment variable REKBATCH_DASK__N_WORKER: dask.n_worker: unknown key")
    assert line.endswith("; did you mean REKBATCH_DASK__N_WORKERS?")


def test_a_misspelt_key_in_the_file_gets_the_closest_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[analyses.labels]\nmin_confidance = 70\n")
    line = one_line(capsys, "--config", str(path), "--input", INPUT, "--dry-run")
    assert line.startswith("analyses.labels.min_confidance: unknown setting")
    assert line.endswith(f"(from config file {path}); did you mean analyses.labels.min_confidence?")


def test_a_bad_value_from_a_variable_names_the_key_the_variable_and_the_form(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REKBATCH_REKOGNITION__TPS", "abc")
    assert one_line(capsys, "--input", INPUT, "--dry-run") == (
        "rekognition.tps: must be a number, got 'abc' (from environment variable REKBATCH_REKOGNITION__TPS)"
    )


def test_a_bad_value_from_the_file_names_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[dask]\nbatch_size = "big"\n')
    assert one_line(capsys, "--config", str(path), "--input", INPUT, "--dry-run") == (
        f"dask.batch_size: must be an integer, got 'big' (from config file {path})"
    )


def test_a_bad_value_from_a_flag_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line(capsys, "--input", INPUT, "--dry-run", "--tps", "-1") == (
        "rekognition.tps: must be > 0, got -1.0 (from flag --tps)"
    )
    assert one_line(capsys, "--input", INPUT, "--dry-run", "--limit", "-3") == (
        "run.limit: must be >= 0, got -3 (from flag --limit)"
    )


def test_a_flag_beats_the_variable_and_the_message_names_the_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REKBATCH_RUN__MAX_ERROR_RATE", "0.5")
    assert one_line(capsys, "--input", INPUT, "--dry-run", "--max-error-rate", "2") == (
        "run.max_error_rate: must be in 0..1, got 2.0 (from flag --max-error-rate)"
    )


def test_probe_needs_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line(capsys, "--input", INPUT, "--output", "o", "--probe") == (
        "run.probe: only with run.dry_run (--dry-run --probe), got True (from flag --probe)"
    )
