"""What the tests share: helpers here, fixtures in ``tests/conftest.py``.

- ``paths``: the repository's root, its blueprints, and this folder;
- ``process``: a child process read by line with deadlines that always hold, and a CLI run
  to its end;
- ``tools``: the programs the suite drives and their Debian packages (also run as a script
  by ``scripts/test``);
- ``servers``: real servers on free loopback ports (redis-server, prometheus,
  ``streammetrics run`` and the other commands);
- ``waiting``: bounded polls (a condition, an HTTP route) that fail with what they saw;
- ``http_app``: a hand-driven clock, a seeded aggregator and a real server for an app;
- ``guards``: that app behind CORS, rate limits and bearer auth;
- ``harness``: a blueprint running in-process, and what its Store wrote;
- ``alerts``: an alert engine and the health judgement on a hand-driven clock;
- ``exposition``: the Prometheus text parsed back;
- ``collectors``: custom collectors and a plugin that brings existing ones;
- ``histograms``: latency histograms as the windows keep them;
- ``sinks``: a bus sink that records what it is handed;
- ``loop``: whether a long computation lets the event loop run other tasks;
- ``flaky``: an endpoint behind a server that fails on purpose;
- ``publisher``, ``interrupted``: programs the tests run as child processes.
"""
