-- What each committed run cost at list price, and per thousand images analysed (the image calls;
-- a face collection's storage calls apart, 0 without index_faces).
SELECT run_id, started_at, images_listed, images_analysed, images_unchanged,
       round(estimated_cost_usd, 4) AS cost_usd,
       round(1000 * estimated_cost_usd / nullif(images_analysed, 0), 4) AS usd_per_1000_images,
       round(coalesce(storage_cost_usd, 0), 4) AS storage_usd,
       ended_at - started_at AS wall_time
FROM runs
ORDER BY started_at;
