"""The Kubernetes API, through the official client: one module per object family.

`api.py` holds what every module here shares (the client, on-call-readable errors, dry runs, patch
types); `models.py` the models and constants more than one family uses. Each family's requests and
answers are in `<family>_models.py`, free of the `kubernetes` package, so workflows import them
without pulling the client into their sandbox.
"""
