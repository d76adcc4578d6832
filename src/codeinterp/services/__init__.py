"""Use cases: the rules of each resource, between the HTTP routes and the store."""
