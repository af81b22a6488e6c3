"""Stand-ins for the services around the product, shared by tests/ and bench/.

- `standins.slack`: Slack's Web API (slack-sdk talks to it through `base_url`).
- `standins.slack_socket`: Slack's Socket Mode websocket, plugged into the Web API stand-in.
- `standins.alertmanager`: Alertmanager's webhook payloads, Prometheus-posted alerts, and a real
  Alertmanager process (Debian `prometheus-alertmanager`).

Not part of the product: the wheel does not ship it. It is importable from the repository root:
pytest puts the root on `sys.path` (`pythonpath = ["."]`), and benchmarks run as modules from the
root (`python -m bench.alert_storm`).
"""
