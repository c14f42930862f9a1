-- Text lines containing a word (case-insensitive), with their upright pixel boxes.
-- Parameter: rekbatch sql --output DEST -f text_lines_containing.sql --set word=stack
SELECT bucket, key, detected_text, round(confidence, 1) AS confidence,
       box_left_px, box_top_px, box_width_px, box_height_px, run_id
FROM text
WHERE type = 'LINE' AND contains(lower(detected_text), lower(getvariable('word')))
ORDER BY bucket, key, box_top_px, box_left_px;
