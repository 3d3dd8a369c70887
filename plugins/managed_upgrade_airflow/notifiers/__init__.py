"""Notifiers: tell people about SLA misses, customer reminders and run deadlines (e-mail, webhook)."""
