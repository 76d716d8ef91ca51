"""The activities service's business rules and SQL, one module per resource."""
