"""Catalog clients: the protocols and their implementations."""
