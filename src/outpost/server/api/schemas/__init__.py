"""What the API accepts and answers with, one module per noun, mirroring `server/store/`. Times are ISO 8601
in UTC (`base.iso`); request bodies refuse unknown fields (`base.In`)."""
