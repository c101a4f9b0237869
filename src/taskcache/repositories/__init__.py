"""Persistence: repositories for entries and reservations.

Repositories apply the conditions the manager hands them; they must not decide policy.
"""
