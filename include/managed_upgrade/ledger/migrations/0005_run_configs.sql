-- One config per run. The first task of a run to start stores the customer config it was started
-- with; every later task, the SLA watch, the deadline callbacks and the failure alerts read it from
-- here, so a YAML file edited during the weeks of an upgrade does not change a running upgrade.

CREATE TABLE run_configs (
    dag_id      text        NOT NULL,
    run_id      text        NOT NULL,
    customer_id text        NOT NULL,
    source      text        NOT NULL,   -- the file it was read from
    digest      text        NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$'),  -- SHA-256 of the document
    document    jsonb       NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now(),
    taken_by    text        NOT NULL,   -- the task that took it
    PRIMARY KEY (dag_id, run_id)
);
