"""Self-supervised tasks and synthetic anomalies."""
