-- Groups of images that show the same person, per collection, from face search (face_matches): faces
-- joined by a match, in either direction and transitively (connected components), each group with the
-- images its faces are in. A face is an indexed face (its FaceId) or a face searched by its crop (the
-- image version and the face's index); an indexed face that matched no other face is a group of its own.
-- Only the current state counts: each image's latest version (its latest committed `images` row), the
-- faces the latest committed run that indexed that version stored, and the matches of the latest
-- committed run that searched it. A match with a face that is not current (of an older version, or
-- indexed again since) joins nothing. Limits: an image indexed or searched into another collection by a
-- later run counts in that collection only; a key deleted from the bucket (or pruned) keeps its last
-- rows, as no table records a deletion. Components by label propagation (DuckDB >= 1.3, USING KEY): one
-- row per face, as many rounds as the longest chain of matches. No parameter.
WITH RECURSIVE latest_version AS (
  SELECT i.bucket, i.key, arg_max(i.etag, c.committed_at) AS etag
  FROM images AS i JOIN commits AS c USING (run_id)
  GROUP BY ALL
), latest_run AS (
  -- Per image version and analysis: the latest committed run in which it succeeded.
  SELECT i.bucket, i.key, i.etag, a.analysis, arg_max(i.run_id, c.committed_at) AS run_id
  FROM images AS i
  JOIN commits AS c USING (run_id)
  JOIN latest_version USING (bucket, key, etag)
  CROSS JOIN unnest(i.analyses) AS a(analysis)
  WHERE a.analysis IN ('index_faces', 'face_search')
  GROUP BY ALL
), searches AS (
  -- The searched face: its FaceId, or its crop named by image version and index (never shared by two
  -- versions of an image, which may show two people).
  SELECT m.collection_id, m.key, m.searched_by, m.face_id AS matched,
         coalesce(m.searched_face_id, concat_ws('#', m.bucket, m.key, m.etag, m.face_index)) AS face
  FROM face_matches AS m JOIN latest_run AS r USING (run_id, bucket, key, etag)
  WHERE r.analysis = 'face_search'
), nodes AS (
  SELECT f.collection_id, f.face_id AS face, f.key
  FROM indexed_faces AS f JOIN latest_run AS r USING (run_id, bucket, key, etag)
  WHERE r.analysis = 'index_faces'
  UNION
  SELECT collection_id, face, key FROM searches WHERE searched_by = 'image'
), edges AS (
  -- Between current faces only.
  SELECT s.collection_id, s.face AS a, s.matched AS b
  FROM searches AS s
  JOIN nodes AS x ON x.collection_id = s.collection_id AND x.face = s.face
  JOIN nodes AS y ON y.collection_id = s.collection_id AND y.face = s.matched
), links AS (
  SELECT collection_id, a, b FROM edges UNION SELECT collection_id, b, a FROM edges
), component(collection_id, face, person) USING KEY (collection_id, face) AS (
  -- Each face starts as its own person; a face takes the smallest person of its neighbours until no
  -- face changes.
  SELECT collection_id, face, face FROM nodes
  UNION
  SELECT l.collection_id, l.b, min(c.person)
  FROM component AS c
  JOIN links AS l ON l.collection_id = c.collection_id AND l.a = c.face
  JOIN recurring.component AS r ON r.collection_id = l.collection_id AND r.face = l.b
  GROUP BY l.collection_id, l.b
  HAVING min(c.person) < min(r.person)
)
SELECT collection_id, person, count(DISTINCT face) AS faces, list(DISTINCT key ORDER BY key) AS keys
FROM component JOIN nodes USING (collection_id, face)
GROUP BY ALL
ORDER BY collection_id, len(keys) DESC, keys;
