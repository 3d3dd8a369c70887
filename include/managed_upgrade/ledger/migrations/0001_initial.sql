-- The project's own ledger: durable facts about every managed upgrade run that outlive Airflow's
-- XComs (cleared between tries) and must be queryable by managers and auditors.

CREATE TABLE runs (
    dag_id        text        NOT NULL,
    run_id        text        NOT NULL,
    customer_id   text        NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    conf          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    summary       jsonb,
    finished_at   timestamptz,
    PRIMARY KEY (dag_id, run_id)
);

CREATE TABLE activity_events (
    id            bigserial   PRIMARY KEY,
    dag_id        text        NOT NULL,
    run_id        text        NOT NULL,
    activity_key  text        NOT NULL,
    event         text        NOT NULL CHECK (event IN
                  ('ready', 'started', 'waiting_on_customer', 'resumed', 'finished', 'failed')),
    try_number    integer     NOT NULL DEFAULT 1,
    at            timestamptz NOT NULL DEFAULT now(),
    detail        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    UNIQUE (dag_id, run_id, activity_key, event, try_number)
);
CREATE INDEX activity_events_run ON activity_events (dag_id, run_id, at);

CREATE TABLE planned_activities (
    dag_id          text        NOT NULL,
    run_id          text        NOT NULL,
    activity_key    text        NOT NULL,
    budget_unit     text,
    owner           text        NOT NULL,
    planned_start   timestamptz,
    planned_finish  timestamptz,
    budget_days     double precision,
    PRIMARY KEY (dag_id, run_id, activity_key)
);

CREATE TABLE sla_misses (
    dag_id          text        NOT NULL,
    run_id          text        NOT NULL,
    budget_unit     text        NOT NULL,
    owner           text        NOT NULL,
    budget_days     double precision NOT NULL,
    planned_finish  timestamptz NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    overrun_days    double precision NOT NULL,
    notified        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- exactly one miss per budget unit per run, whatever retries, restarts or re-parses do
    PRIMARY KEY (dag_id, run_id, budget_unit)
);

CREATE TABLE gate_answers (
    dag_id          text        NOT NULL,
    run_id          text        NOT NULL,
    task_id         text        NOT NULL,
    try_number      integer     NOT NULL,
    responded_by    text        NOT NULL,
    responded_at    timestamptz NOT NULL,
    chosen_options  jsonb       NOT NULL,
    params_input    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (dag_id, run_id, task_id, try_number)
);

CREATE TABLE backups (
    backup_id     text        PRIMARY KEY,
    dag_id        text        NOT NULL,
    run_id        text        NOT NULL,
    customer_id   text        NOT NULL,
    environment   text        NOT NULL,
    location      text        NOT NULL,
    version       text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    descriptor    jsonb       NOT NULL,
    pruned_at     timestamptz
);
CREATE INDEX backups_env ON backups (customer_id, environment, created_at DESC);

CREATE TABLE test_reports (
    dag_id        text        NOT NULL,
    run_id        text        NOT NULL,
    environment   text        NOT NULL,
    round         integer     NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    report        jsonb       NOT NULL,
    junit_xml     text        NOT NULL,
    markdown      text        NOT NULL,
    PRIMARY KEY (dag_id, run_id, environment, round)
);

CREATE TABLE fixes (
    id            bigserial   PRIMARY KEY,
    dag_id        text        NOT NULL,
    run_id        text        NOT NULL,
    environment   text        NOT NULL,
    round         integer     NOT NULL,
    recorded_by   text        NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    description   text        NOT NULL,
    bundle        jsonb       NOT NULL,
    UNIQUE (dag_id, run_id, environment, round)
);
