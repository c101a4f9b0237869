"""Catalog clients: the protocols and their implementations.

Clients compute keys and move outputs; they must not decide cache policy (the manager does).
"""
