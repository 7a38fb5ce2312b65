"""The DuckDB attribution warehouse: loader, schema, unit-economics queries and the query API."""
