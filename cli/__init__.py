"""The `runbooks` command (cli/main.py) and what only it uses: `runbooks dev`, drills, the incident
controls, `runbooks schedules` and `runbooks slack`. The worker process is worker/; cli imports it,
never the other way round (tests/test_layout.py)."""
