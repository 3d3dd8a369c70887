-- Review loops ("Fix Issues and Retest", "Customer Sign-off") ask many questions within one try of
-- their task (each question is its own run of the review DAG), so an answer is identified by the
-- question number as well. Answers of the other gates keep question 0.

ALTER TABLE gate_answers ADD COLUMN question integer NOT NULL DEFAULT 0;
ALTER TABLE gate_answers DROP CONSTRAINT gate_answers_pkey;
ALTER TABLE gate_answers ADD PRIMARY KEY (dag_id, run_id, task_id, try_number, question);
