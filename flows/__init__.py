"""Prefect flows: `promptintern` (one run of the DAG)."""
