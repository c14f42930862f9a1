-- Images by status and reason (the error code of those not analysed), over the latest row of each
-- image version: `rejected` and `skipped` images stay so until their object changes.
WITH latest AS (
  SELECT i.*
  FROM images AS i JOIN commits AS c USING (run_id)
  QUALIFY row_number() OVER (PARTITION BY i.bucket, i.key, i.etag ORDER BY c.committed_at DESC) = 1
)
SELECT status, status_reason, count(*) AS images
FROM latest
GROUP BY ALL
ORDER BY images DESC, status, status_reason;
