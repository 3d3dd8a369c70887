-- Exactly-once SLA alerting: an alert is claimed by inserting its row (the primary key lets one
-- claimer win), then marked notified once sent; claimed-but-unnotified rows are re-sent after a
-- restart.

ALTER TABLE sla_misses
    ADD COLUMN activity_keys jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN notified_at   timestamptz;

CREATE TABLE customer_reminders (
    dag_id           text        NOT NULL,
    run_id           text        NOT NULL,
    budget_unit      text        NOT NULL,
    number           integer     NOT NULL CHECK (number >= 1),
    owner            text        NOT NULL,
    wait_started_at  timestamptz NOT NULL,
    due_at           timestamptz NOT NULL,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    notified         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    notified_at      timestamptz,
    -- reminder N of a customer wait is sent once, whatever retries, restarts or re-parses do
    PRIMARY KEY (dag_id, run_id, budget_unit, number)
);

CREATE TABLE run_deadline_alerts (
    dag_id       text        NOT NULL,
    run_id       text        NOT NULL,
    kind         text        NOT NULL,
    due_at       timestamptz NOT NULL,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    notified     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    notified_at  timestamptz,
    PRIMARY KEY (dag_id, run_id, kind)
);
