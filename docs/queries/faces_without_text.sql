-- Images with at least one face and no text: the latest committed run that ran both `faces` and
-- `text` on each image version (an incremental run may have analysed an image long ago).
WITH latest AS (
  SELECT i.run_id, i.bucket, i.key, i.etag
  FROM images AS i JOIN commits AS c USING (run_id)
  WHERE list_contains(i.analyses, 'faces') AND list_contains(i.analyses, 'text')
  QUALIFY row_number() OVER (PARTITION BY i.bucket, i.key, i.etag ORDER BY c.committed_at DESC) = 1
)
SELECT l.bucket, l.key, count(*) AS faces
FROM latest AS l JOIN faces AS f USING (run_id, bucket, key, etag)
WHERE NOT EXISTS (
  SELECT 1 FROM text AS t
  WHERE (t.run_id, t.bucket, t.key, t.etag) = (l.run_id, l.bucket, l.key, l.etag)
)
GROUP BY ALL
ORDER BY l.bucket, l.key;
