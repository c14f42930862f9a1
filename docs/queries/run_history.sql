-- Every committed run, oldest first, with its accounting: what an incremental run sent and skipped.
SELECT run_id, committed_at, input, attempt, counts.listed, counts.analysed, counts.rejected,
       counts.failed, counts.skipped, counts.unchanged,
       [a.analysis FOR a IN analyses] AS analyses, len(files) AS files
FROM commits
ORDER BY committed_at;
