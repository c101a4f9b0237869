"""Persistence: repositories for entries and reservations."""
