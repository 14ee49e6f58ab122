"""One module per playbook step kind; :mod:`.dispatch` maps a step's ``kind`` to its coroutine."""
