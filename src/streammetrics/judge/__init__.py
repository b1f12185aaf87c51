"""The judgement of each tick's figures, made once per snapshot after the aggregator
folded them: health (``health``: scores, stalled streams, status and the reasons for
them) and the alert rules (``alerts``)."""
