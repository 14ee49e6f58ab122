"""Semantic checks on a schema-valid playbook, one concern per module; :mod:`.suite` runs them in order.

This file stays empty: check modules import their siblings, and importing the package must not import
them all (that made ``orders`` import the package that imports ``orders``)."""
