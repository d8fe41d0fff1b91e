"""Pure pipeline code, no I/O: codefresh.yml read with locations (yamlnodes), checked field by field
(fields), turned into the spec (parsing, spec), and variables."""
