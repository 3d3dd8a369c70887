"""The review loops ("Fix Issues and Retest", "Customer Sign-off"): the next question and its run's name."""
