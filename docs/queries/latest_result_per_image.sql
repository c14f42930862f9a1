-- The current state of every image version (bucket, key, etag) across incremental runs: its latest
-- row and every analysis settled for it by any committed run.
SELECT i.bucket, i.key, i.etag,
       arg_max(i.run_id, c.committed_at) AS latest_run_id,
       arg_max(i.status, c.committed_at) AS status,
       list_sort(list_distinct(flatten(list([d.analysis FOR d IN i.analyses_done])))) AS analyses_settled
FROM images AS i JOIN commits AS c USING (run_id)
GROUP BY ALL
ORDER BY i.bucket, i.key, i.etag;
