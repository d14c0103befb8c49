"""o16n core: all behaviour behind the HTTP functions. Importing it does no I/O."""
