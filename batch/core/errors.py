"""The exceptions of rekognition-batch, in one place.

Everything this package raises on purpose derives from `RekbatchError`: its str() is a one-line reason
and its `exit_code` is the CLI's exit code: `ConfigError` (and `RunNotFound`) 2; `InputUnreachable`,
`OutputUnwritable`, `OutputUnreadable`, `CollectionUnavailable` 3; `RunAborted` 4; `CommitRaceLost` 5;
`TooManyErrors` 6; `NothingToAnalyse` 7; `Interrupted` 128 + the signal (130 for SIGINT, 143 for
SIGTERM); `QueryFailed` 1. Per-image failures are never raised out of a task: they become rows of the
`errors` table.
"""

from __future__ import annotations


class RekbatchError(Exception):
    """Base class: every error this package raises on purpose. Its str() is a one-line reason."""

    #: The process exit code the CLI uses for this error.
    exit_code = 1


class ConfigError(RekbatchError):
    """A bad configuration value. The message names the key, e.g. `analyses.labels.min_confidence`."""

    exit_code = 2


class RunNotFound(ConfigError):
    """No finished run with that id under the output (a run writes its `runs` row last)."""


class InputUnreachable(RekbatchError):
    """The input location cannot be listed: missing bucket, access denied, endpoint down."""

    exit_code = 3


class OutputUnwritable(RekbatchError):
    """The output location cannot be written."""

    exit_code = 3


class OutputUnreadable(RekbatchError):
    """The output location cannot be listed or read (missing bucket or folder, denied access)."""

    exit_code = 3


class CollectionUnavailable(RekbatchError):
    """A face collection cannot be used: it does not exist (`rekbatch collection`), access to it is
    denied, or Rekognition kept failing. Exit 3, as an unreachable bucket."""

    exit_code = 3


class RunAborted(RekbatchError):
    """The run stopped part-way for a reason that affects every image (e.g. AccessDeniedException)."""

    exit_code = 4


class CommitRaceLost(RekbatchError):
    """Another attempt on the same run id created the manifest first; this attempt's files are never read."""

    exit_code = 5


class TooManyErrors(RekbatchError):
    """The run committed, but rejected + failed images are above `--max-error-rate`."""

    exit_code = 6


class MigrationIncomplete(RekbatchError):
    """`rekbatch collection migrate` committed, but some images are not in the target collection
    (changed, deleted or failed since they were indexed): the source collection is kept."""

    exit_code = 6


class NothingToAnalyse(RekbatchError):
    """The input prefix lists no images (empty, or every key filtered out): nothing was committed."""

    exit_code = 7


class Interrupted(RekbatchError):
    """The run was stopped by a signal (SIGINT, SIGTERM) and committed nothing; exit 128 + the signal's
    number, as a shell reports a process killed by it."""

    exit_code = 130

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class QueryFailed(RekbatchError):
    """`rekbatch sql`: a statement did not parse or failed; the message is DuckDB's, on one line."""

    exit_code = 1
