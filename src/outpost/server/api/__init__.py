"""HTTP handlers: thin; parse, call a store function, answer with a schema."""
