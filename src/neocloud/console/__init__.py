"""The web console: server-rendered pages for tenants and operators at ``/``.

A caller of the API like the CLI: every page reads and writes through ``/api/v1`` and ``/v1``
in process with the signed-in user's key (``inproc.py``), so it is authorized exactly as the API
is. Sessions and CSRF in ``session.py``; plumbing, error pages and the CSP in ``app.py``; the
pages in ``tenant.py``, ``playground.py`` and ``operator.py``; what the operator pages draw in
``views.py``. Assets (htmx and uPlot vendored, with their licences) ship in ``static/``.
"""
