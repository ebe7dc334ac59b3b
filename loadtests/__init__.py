"""Locust load tests: target service, scenarios and the run-and-verify driver."""
