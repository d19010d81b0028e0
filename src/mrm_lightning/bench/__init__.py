"""MRM against its peers on one protocol: the harness, the few-shot protocol and the report."""
