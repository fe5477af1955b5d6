"""Pipeline machinery: settings, the one `create_pipeline`, and the components around it."""
