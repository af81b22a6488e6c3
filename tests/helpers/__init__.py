"""What the tests share: fixtures (the `fixtures_*` plugin modules tests/conftest.py lists), the one polling
helper (`waiting`), the audit log's writes (`audit`), queries and waits on a running incident
(`incident_queries`), the time-skipping harness and its test playbooks, and each playbook's inputs and
readings. Test modules import from here, never from one another."""
