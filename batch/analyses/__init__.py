"""The analyses: one module per Rekognition analysis, each defining `ANALYSIS`.

* `base`: the protocol (`Analysis`, its driver-side `DriverHooks`), with a default for every hook;
* `registry`: `REGISTRY`, one line per analysis, and what the job derives from it;
* one module per analysis (`labels`, `faces`, `text`, `moderation`, `celebrities`, `index_faces`,
  `face_search`, `compare_faces`, `ppe`): its settings, request, tables, rows and hooks; pure, except the
  driver hooks, which take their clients from `DriverSetup`;
* `face_crops`: the faces cut out of images, shared by face search, comparison and references.

May import: `batch.core`, `batch.config.model`, and for driver hooks `batch.aws`, `batch.storage`,
`batch.faces`. Adding an analysis: one module and one line in `registry.REGISTRY`.
"""
