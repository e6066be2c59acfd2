"""Dynamic batching: a pure policy (`policy.decide`), an online latency model,
and the mechanism (`batcher.Batcher`) that queues requests per model version,
forms batches when an instance is free, runs them and splits the results."""
