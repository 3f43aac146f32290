"""HTTP plumbing that every context's router uses: context, caller, paging and base schemas.

Routers (``<context>/api.py``) import this, never ``neocloud.api``; the app factory in
``neocloud.api`` mounts them and installs the authenticator.
"""
