"""Who is calling: API tokens, principals and roles, and which role may call which RPC."""
