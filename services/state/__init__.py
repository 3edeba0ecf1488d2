"""Customer state behind one interface (``store``): the scorer, the API and erasure use it."""
