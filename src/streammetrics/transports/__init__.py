"""Event sources and senders beyond the process.

- ``http_client``: ``EventClient``/``AsyncEventClient``, posting to ``POST /events``;
- ``redis_source``: the Redis Streams consumer group source (``RedisSource``);
- ``redis_publisher``: ``EventPublisher``/``AsyncEventPublisher``, writing to a stream;
- ``redis_metrics``: the consumer's figures for ``/metrics`` (``RedisCollector``);
- ``config``: ``MetricsEndpoint`` config ``source`` (no client imported);
- ``batching``: the one batcher of every sender (buffer, ids, what a failed send keeps);
- ``senders``: the flush loop with its retries, the periodic flush and the lifecycle
  every sender shares;
- ``retry``: the one retry policy, an iterator of backoff delays.

Events that arrive enter through ``streammetrics.intake``, shared with HTTP ingest.
Importing this package imports none of them: a Redis client is loaded only when used.
"""
