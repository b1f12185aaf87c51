"""What is built once per tick and read by every request: the tick cache (snapshot,
process sample, custom collectors, Prometheus render) and the live feed behind
``/stream``. Nothing HTTP lives here; the routes in ``streammetrics.http`` read these."""
