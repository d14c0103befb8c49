"""One blueprint per resource; each handler parses, calls one core function, responds."""
