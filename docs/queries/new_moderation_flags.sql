-- Moderation labels the last committed run found that no earlier committed run had found on the
-- same image (bucket, key): what to review this morning.
WITH last_run AS (
  SELECT run_id FROM commits ORDER BY committed_at DESC LIMIT 1
)
SELECT m.bucket, m.key, m.name, m.parent_name, m.taxonomy_level, round(m.confidence, 1) AS confidence
FROM moderation AS m
WHERE m.run_id = (SELECT run_id FROM last_run)
  AND NOT EXISTS (
    SELECT 1 FROM moderation AS earlier
    WHERE earlier.run_id <> m.run_id
      AND (earlier.bucket, earlier.key, earlier.name) = (m.bucket, m.key, m.name)
  )
ORDER BY m.bucket, m.key, m.taxonomy_level, m.name;
