"""The fault suite: one module per class of fault (hostile connections, untrusted ingest,
broken inputs, failing dependencies, kills), each through real parts: a real server on
loopback, a real redis-server, real signals. Each test asserts that the endpoint keeps
answering ``/health``, reports the fault where a user looks, and loses no event it
acknowledged."""
