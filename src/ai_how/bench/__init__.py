"""``ai-how bench``: load generation against model servers (``serve``) and cold-start timing (``coldstart``)."""
