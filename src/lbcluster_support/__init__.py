"""Helpers of the project's own tools: the integration tests, the benchmark, the scripts.

They drive and observe a cluster from the host, as its operator would: run
``ansible-playbook`` the way ``make`` does (:mod:`.playbook`), poll until a
condition holds (:mod:`.poll`), read the HAProxy stats page (:mod:`.statspage`)
and run commands inside the containers (:mod:`.containers`).

This package is not in the container images: they install ``src/lbcluster``
only. It is used from the project's checkout (``pip install -e .`` puts it in
the venv), where :mod:`.project` finds the project root.
"""
