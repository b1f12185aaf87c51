"""Where events from outside the process enter an endpoint's aggregates.

HTTP ingest (``streammetrics.http.ingest``) and the Redis consumer
(``streammetrics.transports.redis_source``) both fold through one ``Intake`` per
endpoint, so they share its dedup window and count what they could not fold alike:

- ``intake``: decode, dedup and fold one body, counting every rejection;
- ``dedup``: the bounded window of event ids already folded;
- ``config``: ``MetricsEndpoint`` config ``ingest`` and ``dedup``.

Importing this package imports none of them.
"""
