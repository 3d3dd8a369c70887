"""What the customer receives: the process's e-mails, composed from the config and the run's facts."""
