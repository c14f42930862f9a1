-- Every image of the person in a reference photo (compare_faces): the images whose faces CompareFaces
-- matched a face of the photo, best similarity first. A photo with several faces: the matches of each
-- face count. Only the current state: the photo's current version (its ETag in the latest committed run
-- that compared images with it, from face_comparison_misses: a row per comparison made, matched or not,
-- so a replaced photo that matches nothing returns nothing), each image's latest version (its latest
-- committed `images` row), and for that version the matches of the latest committed run that compared
-- it with that photo version (not those of earlier runs, e.g. under a lower similarity_threshold).
-- Parameter: rekbatch sql --output DEST -f images_of_reference_person.sql --set reference=people/ada.jpg
-- (the reference photo's key, as given to --reference or listed under its prefix).
WITH latest_version AS (
  SELECT i.bucket, i.key, arg_max(i.etag, c.committed_at) AS etag
  FROM images AS i JOIN commits AS c USING (run_id)
  GROUP BY ALL
), compared AS (
  SELECT m.run_id, c.committed_at, m.bucket, m.key, m.etag, m.reference_etag
  FROM face_comparison_misses AS m JOIN commits AS c USING (run_id)
  WHERE m.reference_key = getvariable('reference')
), reference AS (
  SELECT arg_max(reference_etag, committed_at) AS etag FROM compared
), latest_comparison AS (
  -- Per image version: the latest run that compared it with the photo's current version.
  SELECT bucket, key, etag, arg_max(run_id, committed_at) AS run_id
  FROM compared JOIN latest_version USING (bucket, key, etag)
  WHERE reference_etag = (SELECT etag FROM reference)
  GROUP BY ALL
)
SELECT f.bucket, f.key,
       count(DISTINCT (f.box_left, f.box_top, f.box_width, f.box_height)) AS faces,
       round(max(f.similarity), 1) AS similarity
FROM face_comparisons AS f
JOIN latest_comparison USING (run_id, bucket, key, etag)
JOIN reference AS r ON f.reference_etag = r.etag
WHERE f.reference_key = getvariable('reference')
GROUP BY ALL
ORDER BY similarity DESC, f.bucket, f.key;
