"""Business time: the customer's calendar, the run's plan on it, the SLA clock, deadlines and alerts."""
