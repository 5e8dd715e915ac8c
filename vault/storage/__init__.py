"""Database schema and engine set-up (SQLite for the embedded default, PostgreSQL in production)."""
