-- Retention deletes by time, and rows arrive in time order: a BRIN index (a summary per
-- range of blocks) finds them as well, at almost no cost per insert. The B-trees cost
-- every append of events and every delivery attempt an index insert.
DROP INDEX events_created_at_idx;
CREATE INDEX events_created_at_idx ON events USING brin (created_at);
DROP INDEX delivery_attempts_time_idx;
CREATE INDEX delivery_attempts_time_idx ON delivery_attempts USING brin (attempted_at);
