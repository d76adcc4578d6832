"""One module per resource; each only decodes the request and encodes the answer."""
