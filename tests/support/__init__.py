"""What the tests share: helpers here, fixtures in ``tests/conftest.py``.

- ``paths``: the repository's root and this folder;
- ``process``: a child process read by line with deadlines that always hold;
- ``tools``: the programs the suite drives and their Debian packages (also run as a script
  by ``scripts/test``);
- ``servers``: real servers on free loopback ports (redis-server, prometheus,
  ``streammetrics run``);
- ``http_app``: a hand-driven clock, a seeded aggregator and a real server for an app;
- ``harness``: a blueprint running in-process;
- ``flaky``: an endpoint behind a server that fails on purpose;
- ``publisher``, ``interrupted``: programs the tests run as child processes.
"""
