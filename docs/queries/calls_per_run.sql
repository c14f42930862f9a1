-- Rekognition calls of each committed run by operation: successes, throttles, other errors.
SELECT r.run_id, c.operation,
       sum(c.count) AS calls,
       coalesce(sum(c.count) FILTER (WHERE c.outcome = 'ok'), 0) AS ok,
       coalesce(sum(c.count) FILTER (WHERE c.outcome = 'throttled'), 0) AS throttled,
       coalesce(sum(c.count) FILTER (WHERE c.outcome NOT IN ('ok', 'throttled')), 0) AS errors
FROM runs AS r, UNNEST(r.calls) AS t(c)
GROUP BY ALL
ORDER BY min(r.started_at), r.run_id, c.operation;
