-- 0002: per-workflow success/failure counters (our addition to the seed's analytics, issue 5).
-- Duration percentiles are computed on read from the jobs table (see store/analytics.py).
ALTER TABLE analytics
    ADD COLUMN jobs_succeeded INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN jobs_failed    INTEGER NOT NULL DEFAULT 0;
