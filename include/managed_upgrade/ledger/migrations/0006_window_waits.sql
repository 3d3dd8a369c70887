-- An upgrade that waits for its environment's upgrade window (or for a change freeze to end) records
-- 'waiting_for_window' (detail: until = the opening it waits for, reason, message; try_number = the
-- wait's number in the run). The SLA clock counts that time as scheduled, against nobody's budget.

ALTER TABLE activity_events DROP CONSTRAINT activity_events_event_check;
ALTER TABLE activity_events ADD CONSTRAINT activity_events_event_check CHECK (event IN
    ('ready', 'started', 'waiting_on_customer', 'resumed', 'waiting_for_window', 'finished', 'failed'));
