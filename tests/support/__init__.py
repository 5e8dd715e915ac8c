"""Shared test helpers: synthetic people, running servers, database fixtures."""
