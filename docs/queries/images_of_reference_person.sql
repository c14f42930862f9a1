-- Every image of the person in a reference photo (compare_faces): the images whose faces CompareFaces
-- matched a face of the photo, latest version of each image, against the photo's latest version;
-- best similarity first. A photo with several faces: the matches of each face count.
-- Parameter: rekbatch sql --output DEST -f images_of_reference_person.sql --set reference=people/ada.jpg
-- (the reference photo's key, as given to --reference or listed under its prefix).
WITH latest_version AS (
  SELECT i.bucket, i.key, arg_max(i.etag, c.committed_at) AS etag
  FROM images AS i JOIN commits AS c USING (run_id)
  GROUP BY ALL
), reference AS (
  SELECT arg_max(f.reference_etag, c.committed_at) AS etag
  FROM face_comparisons AS f JOIN commits AS c USING (run_id)
  WHERE f.reference_key = getvariable('reference')
)
SELECT f.bucket, f.key,
       count(DISTINCT (f.box_left, f.box_top, f.box_width, f.box_height)) AS faces,
       round(max(f.similarity), 1) AS similarity
FROM face_comparisons AS f
JOIN latest_version AS v USING (bucket, key, etag)
JOIN reference AS r ON f.reference_etag = r.etag
WHERE f.reference_key = getvariable('reference')
GROUP BY ALL
ORDER BY similarity DESC, f.bucket, f.key;
