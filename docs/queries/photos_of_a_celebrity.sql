-- Every photo of a recognised person, with the face's box in upright pixels.
-- Parameter: rekbatch sql --output DEST -f photos_of_a_celebrity.sql --set celebrity='Ada Lovelace'
-- (matched case-insensitively on the name or the celebrity id).
SELECT c.bucket, c.key, c.name, c.celebrity_id, round(c.match_confidence, 1) AS match_confidence,
       c.box_left_px, c.box_top_px, c.box_width_px, c.box_height_px, c.run_id
FROM celebrities AS c
WHERE lower(c.name) = lower(getvariable('celebrity')) OR c.celebrity_id = getvariable('celebrity')
ORDER BY c.bucket, c.key, c.box_left_px;
