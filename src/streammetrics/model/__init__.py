"""The wire model: the types every layer above shares (events, names, ports, durations)
and the bounds on what may come in from outside (nesting depth, name rules)."""
