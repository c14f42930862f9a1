-- Formats and Exif orientations of the images whose header could be read (latest row per image
-- version): how many are stored turned (5-8 swap width and height) or mirrored.
WITH latest AS (
  SELECT i.*
  FROM images AS i JOIN commits AS c USING (run_id)
  QUALIFY row_number() OVER (PARTITION BY i.bucket, i.key, i.etag ORDER BY c.committed_at DESC) = 1
)
SELECT format, exif_orientation, count(*) AS images
FROM latest
WHERE format IS NOT NULL
GROUP BY ALL
ORDER BY format, exif_orientation;
