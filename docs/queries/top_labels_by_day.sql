-- The ten most frequent labels of each day (`dt`, the runs' start date), counted in images.
SELECT dt, name, count(DISTINCT (bucket, key, etag)) AS images,
       round(avg(confidence), 1) AS mean_confidence
FROM labels
GROUP BY dt, name
QUALIFY row_number() OVER (PARTITION BY dt ORDER BY images DESC, name) <= 10
ORDER BY dt, images DESC, name;
