-- The twenty largest faces, as a share of their image's upright area (close-ups, portraits).
SELECT key, face_index, round(box_width * box_height, 4) AS area_share,
       box_left_px, box_top_px, box_width_px, box_height_px, bucket, run_id
FROM faces
WHERE box_width IS NOT NULL
ORDER BY area_share DESC, bucket, key, face_index
LIMIT 20;
