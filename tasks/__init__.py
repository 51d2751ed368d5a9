"""Thin Prefect tasks, one per DAG box; each wraps one ``promptintern.pipeline`` call.

Import direction: flows -> tasks -> promptintern, never back.
"""
