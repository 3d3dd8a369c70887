-- A stopped run is quiet. When ops marks a customer run failed (or success) or stops one of its tasks by
-- hand, the activity listener records here when, how and why; the run's SLA watch reads it before every
-- alert it would send and ends without sending or claiming anything more. Questions the run left open in
-- Airflow (its own gates and its runs of the review DAG) are closed with that reason, one row each in
-- closed_questions.

CREATE TABLE run_stops (
    id          bigserial   PRIMARY KEY,
    dag_id      text        NOT NULL,
    run_id      text        NOT NULL,
    task_id     text,       -- NULL: the run itself; else the task stopped by hand
    how         text        NOT NULL CHECK (how IN
                ('run_marked_failed', 'run_marked_success', 'run_failed',
                 'task_marked_failed', 'task_marked_skipped', 'watch_marked_success')),
    stopped_at  timestamptz NOT NULL,
    reason      text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_stops_run ON run_stops (dag_id, run_id, stopped_at);

CREATE TABLE closed_questions (
    id            bigserial   PRIMARY KEY,
    dag_id        text        NOT NULL,   -- the customer run the question was asked for
    run_id        text        NOT NULL,
    task_id       text        NOT NULL,   -- its task that asked
    question      integer     NOT NULL DEFAULT 0,  -- review question number; 0: the task's own gate
    hitl_dag_id   text        NOT NULL,   -- where Airflow held it: the customer DAG or the review DAG
    hitl_run_id   text        NOT NULL,
    hitl_task_id  text        NOT NULL,
    closed_at     timestamptz NOT NULL,
    reason        text        NOT NULL
);
CREATE INDEX closed_questions_run ON closed_questions (dag_id, run_id, closed_at);
