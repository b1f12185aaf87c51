"""The Prometheus exposition: the snapshot's families (``collector``) and the endpoint's
custom collectors, each isolated from the others (``custom``)."""
