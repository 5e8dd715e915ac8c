"""piivault's client side: generated API code (``piivault.v1``) and the ``piivault`` command-line tool."""
