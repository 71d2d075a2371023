"""Airflow set-up: its SQLite connection arguments and the idempotent init steps."""
