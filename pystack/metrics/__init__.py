"""pystack.metrics: the Prometheus exporter (see exporter.py for the metric table)."""

from pystack.metrics.exporter import (
    METRICS,
    MetricSpec,
    MetricsServer,
    StackCollector,
    StackMetrics,
    StackSources,
    parse_hostport,
    serve_metrics,
)

__all__ = [
    "METRICS",
    "MetricSpec",
    "MetricsServer",
    "StackCollector",
    "StackMetrics",
    "StackSources",
    "parse_hostport",
    "serve_metrics",
]
