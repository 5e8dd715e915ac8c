"""Key hierarchy: a key-encryption key (KEK) held by a ``KeyProvider`` wraps per-customer data keys and service keys."""
