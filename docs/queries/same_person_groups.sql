-- Groups of images that show the same person, from face search (face_matches): faces joined by a
-- match, in either direction and transitively (connected components), each group with the images its
-- faces are in. A face is an indexed face (its FaceId) or a face searched by its crop (image and index);
-- an indexed face that matched no other face is a group of its own. The closure grows with the square
-- of a group's size: fine for thousands of faces per person.
WITH RECURSIVE nodes AS (
  SELECT face_id AS face, key FROM indexed_faces
  UNION SELECT concat_ws('#', bucket, key, face_index), key FROM face_matches WHERE searched_by = 'image'
), edges AS (
  SELECT coalesce(searched_face_id, concat_ws('#', bucket, key, face_index)) AS a, face_id AS b
  FROM face_matches
), links(a, b) AS (
  SELECT a, b FROM edges UNION SELECT b, a FROM edges UNION SELECT face, face FROM nodes
), reach(face, member) AS (
  SELECT a, b FROM links
  UNION SELECT r.face, l.b FROM reach AS r JOIN links AS l ON l.a = r.member
), people AS (SELECT face, min(member) AS person FROM reach GROUP BY face)
SELECT p.person, count(DISTINCT n.face) AS faces, list(DISTINCT n.key ORDER BY n.key) AS keys
FROM people AS p JOIN nodes AS n USING (face)
GROUP BY p.person
ORDER BY len(keys) DESC, keys;
