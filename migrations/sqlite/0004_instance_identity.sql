-- Who each dispatcher instance is and where it runs, so that a restarted instance can take
-- back at once the leases of a predecessor that is dead for sure (instead of waiting for
-- them to expire).
ALTER TABLE dispatcher_instances ADD COLUMN name TEXT;            -- OUTHOOK_INSTANCE_NAME, or <host name>:<pid>
ALTER TABLE dispatcher_instances ADD COLUMN host TEXT;            -- the host name
ALTER TABLE dispatcher_instances ADD COLUMN pid INTEGER;
ALTER TABLE dispatcher_instances ADD COLUMN pid_namespace TEXT;   -- <boot id>/<pid namespace>: where `pid` means something
ALTER TABLE dispatcher_instances ADD COLUMN process_started INTEGER; -- the process's start (clock ticks after boot): with pid, one process
