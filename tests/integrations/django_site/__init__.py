"""A minimal Django project for the middleware tests."""

USERS = ("alice", "bob")  # created by the database fixture; password: <name>-secret
