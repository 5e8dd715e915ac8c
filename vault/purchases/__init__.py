"""Purchases, filed under random pseudonyms, and the pseudonymised analytics feed built from them."""
