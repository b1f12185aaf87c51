"""Alert rules with a lifecycle, and recommendations: the figures a rule may name
(``figures``), the rules and the built-in set (``rules``), the lifecycle that runs them
(``engine``) and the expression language they are written in (``expressions``)."""
