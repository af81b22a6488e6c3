"""Stand-ins for the services around the product, shared by tests/ and bench/.

- `standins.slack`: Slack's Web API (slack-sdk talks to it through `base_url`).
- `standins.slack_socket`: Slack's Socket Mode websocket, plugged into the Web API stand-in.
- `standins.pagerduty`: PagerDuty's Events API v2 over HTTPS (a throwaway CA, `standins.throwaway_ca`); the
  official `pagerduty` client talks to it through its base URL. `standins.pagerduty_webhooks`: v3
  webhooks signed as PagerDuty signs them.
- `standins.alertmanager`: Alertmanager's webhook payloads, Prometheus-posted alerts, and a real
  Alertmanager process (Debian `prometheus-alertmanager`).

Not part of the product: the wheel does not ship it. It is importable from the repository root:
pytest puts the root on `sys.path` (`pythonpath = ["."]`), and benchmarks run as modules from the
root (`python -m bench.alert_storm`).
"""
