"""What the chart ships for watching models in production: the Grafana dashboard and the alert rules."""
