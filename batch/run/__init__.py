"""One run of the job. Driver side: `job` (the entry point), `plan` (listing and planning), `drive`
(the Dask loop), `commit` (attempts and the commit), `summary`, `text` and `progress` (what the run
tells; `progress` holds the worker side of its events too).
Worker side: `batch_task` (one Dask task), `image_pipeline` (one image), `runtime` (a worker
process's threads and clients), `context` (what travels with a task); `faults` (test-only faults).

May import: anything in `batch` except `cli`, `query` and `report` (`job` writes the report lazily).
"""
