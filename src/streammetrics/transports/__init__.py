"""Event sources and sinks beyond the process.

- ``intake``: where events from outside enter an endpoint's aggregates (decode, dedup, fold);
- ``dedup``: the bounded window of event ids already folded;
- ``config``: ``MetricsEndpoint`` config ``ingest`` and ``source`` (no client imported);
- ``redis``: the Redis Streams consumer group source and the publishers;
- ``retry``: the backoff policy the HTTP client and the Redis publishers share.

``streammetrics.http.ingest`` serves ``POST /events``; ``streammetrics.client`` posts to it.
Importing this package imports none of them: a Redis client is loaded only when used.
"""
