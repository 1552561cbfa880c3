-- Retention drops an event's body first and keeps its id (so that a producer's retry is
-- still recognised as a duplicate) until a longer window ends. Bodies are dropped in log
-- order; this row says how far, so that no step reads again the events already done.
CREATE TABLE log_retention (
    id                     INTEGER PRIMARY KEY CHECK (id = 1),
    bodies_dropped_through BIGINT  NOT NULL
);
INSERT INTO log_retention (id, bodies_dropped_through) VALUES (1, 0);
