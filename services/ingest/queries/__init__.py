"""What the query routes compute, free of HTTP: they raise domain errors, routes map them."""
