-- Every committed run, oldest first, with its accounting: what an incremental run sent and skipped.
-- A long run (--commit-every) has a `commits` row per segment: their counts add up to the run's, and
-- `finished` is false until its final commit.
SELECT run_id, max(committed_at) AS committed_at, any_value(input) AS input, max(attempt) AS attempt,
       sum(counts.listed) AS listed, sum(counts.analysed) AS analysed, sum(counts.rejected) AS rejected,
       sum(counts.failed) AS failed, sum(counts.skipped) AS skipped, sum(counts.unchanged) AS unchanged,
       any_value([a.analysis FOR a IN analyses]) AS analyses, sum(len(files)) AS files,
       count(*) AS segments, bool_or(coalesce(final, true)) AS finished
FROM commits
GROUP BY run_id
ORDER BY committed_at;
