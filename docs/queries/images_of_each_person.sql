-- Every image of each person of the face users (user_search, --users): per user, the images in which
-- a face matched it, with how many of the image's faces did and the best similarity. Only the current
-- state: each image's latest version (its latest committed `images` row) and the matches of the latest
-- committed run that searched that version; the users the latest committed run with users in that
-- collection kept (a user deleted since, its folder removed, is left out). No parameter.
WITH latest_version AS (
  SELECT i.bucket, i.key, arg_max(i.etag, c.committed_at) AS etag
  FROM images AS i JOIN commits AS c USING (run_id)
  GROUP BY ALL
), latest_search AS (
  SELECT i.bucket, i.key, i.etag, arg_max(i.run_id, c.committed_at) AS run_id
  FROM images AS i
  JOIN commits AS c USING (run_id)
  JOIN latest_version USING (bucket, key, etag)
  WHERE list_contains(i.analyses, 'user_search')
  GROUP BY ALL
), latest_users AS (
  SELECT u.collection_id, arg_max(u.run_id, c.committed_at) AS run_id
  FROM users AS u JOIN commits AS c USING (run_id)
  GROUP BY ALL
), current_users AS (
  SELECT u.collection_id, u.user_id, u.person
  FROM users AS u JOIN latest_users USING (collection_id, run_id)
  WHERE u.change <> 'deleted'
)
SELECT m.collection_id, u.person, m.user_id, m.bucket, m.key,
       count(*) AS faces, round(max(m.similarity), 1) AS similarity
FROM user_matches AS m
JOIN latest_search USING (run_id, bucket, key, etag)
JOIN current_users AS u USING (collection_id, user_id)
GROUP BY ALL
ORDER BY m.collection_id, u.person, similarity DESC, m.bucket, m.key;
