"""What the driver sends with each task: the run's shared context and a batch of planned images."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batch.config.model import RekognitionConfig
from batch.core.incremental import Digests
from batch.core.manifest import data_file_name
from batch.core.regions import RegionPlan
from batch.core.selection import ListedObject
from batch.storage.sink import Destination

__all__ = ["BatchSpec", "ImageToAnalyse", "RunContext"]


@dataclass(frozen=True)
class RunContext:
    """What every task of a run shares (small and picklable: it travels with each task)."""

    run_id: str
    attempt: int
    dt: str
    bucket: str
    analyses: tuple[str, ...]
    analysis_settings: Mapping[str, Any]
    #: What an image settled for each analysis records (`batch.analyses.registry.settled_digests`): stored in
    #: the `images` rows' `analyses_done` for incremental runs.
    settings_digests: Mapping[str, Digests]
    rekognition: RekognitionConfig
    destination: Destination
    compression: str
    #: Threads that may share one worker process's clients (Dask threads x max calls in flight per task).
    threads_per_process: int
    #: Where each image's stateless calls go (`batch.core.regions`); None: the run's region, as listed
    #: nowhere (tests that build a context by hand).
    regions: RegionPlan | None = None

    @property
    def run_key(self) -> str:
        """This attempt of the run, for the state a worker process keeps per attempt."""
        return f"{self.run_id}/{self.attempt}"


@dataclass(frozen=True)
class ImageToAnalyse:
    """A listed object and the analyses it needs in this run (in the run's order)."""

    obj: ListedObject
    analyses: tuple[str, ...]
    #: For an analysis settled part by part, the parts it still needs when not all (positions in
    #: `settled_digests`; e.g. the reference photos an image was not compared with yet).
    parts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    #: On `--resume`: the earlier attempt whose unfinished record of the image holds answers to take
    #: (`batch.core.image_record`); 0 for none.
    resumes: int = 0
    #: The region of its stateless calls, as the driver placed it (`batch.core.regions.RegionBalancer`);
    #: None: the image's own (`RegionPlan.region_for`).
    region: str | None = None


@dataclass(frozen=True)
class BatchSpec:
    """One Dask task: a batch of images of the run, numbered in submission order."""

    context: RunContext
    index: int
    images: tuple[ImageToAnalyse, ...]
    #: Images analysed at once in this task (planned by the driver with Little's law).
    calls_in_flight: int

    @property
    def file_name(self) -> str:
        return data_file_name(self.context.run_id, self.context.attempt, self.index)
