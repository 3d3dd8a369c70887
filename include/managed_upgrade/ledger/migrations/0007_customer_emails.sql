-- Customer e-mails sent by tasks that a crash may retry (hand-over, completion): the row is claimed
-- with the message's Message-ID before the message is handed to the mail server and marked sent
-- after. A retry that finds it sent does not mail again; one that finds it only claimed (the earlier
-- try died while sending) sends it again under the same Message-ID, which mail clients and archives
-- show as one message.

CREATE TABLE customer_emails (
    dag_id      text        NOT NULL,
    run_id      text        NOT NULL,
    email_key   text        NOT NULL,
    message_id  text        NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    attempts    integer     NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    sent_at     timestamptz,
    sent        jsonb,
    PRIMARY KEY (dag_id, run_id, email_key)
);
