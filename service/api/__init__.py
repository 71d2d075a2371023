"""The HTTP API: blueprints, request parsing, the API key check, the OpenAPI document."""
