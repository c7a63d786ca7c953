"""Command-line code of the agent side: plan, poll-now, status and shadow watch."""
