"""The customer aggregate: canonical identifiers, validation, encrypted storage, the customer service."""
