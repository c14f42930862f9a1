-- Images the job has seen (latest version of each key) that no committed run has settled for an
-- analysis yet: what the next run with that analysis will send (failed images included).
-- Parameter: rekbatch sql --output DEST -f images_missing_an_analysis.sql --set analysis=celebrities
WITH latest_version AS (
  SELECT i.bucket, i.key, arg_max(i.etag, c.committed_at) AS etag
  FROM images AS i JOIN commits AS c USING (run_id)
  GROUP BY ALL
)
SELECT v.bucket, v.key, v.etag
FROM latest_version AS v
WHERE NOT EXISTS (
  SELECT 1 FROM images AS i, UNNEST(i.analyses_done) AS t(d)
  WHERE (i.bucket, i.key, i.etag) = (v.bucket, v.key, v.etag) AND d.analysis = getvariable('analysis')
)
ORDER BY v.bucket, v.key;
