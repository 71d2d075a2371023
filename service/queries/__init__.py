"""Query encoding: the service's encoder, the query embedder and dynamic batching."""
