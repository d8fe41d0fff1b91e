"""Pure pipeline code, no I/O: codefresh.yml parsing with locations, the spec, validation and variables."""
