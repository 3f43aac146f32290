"""The neocloud Python SDK.

    from neocloud.client import Client
    nc = Client("http://127.0.0.1:8420", api_key="nck_…")
    for node in nc.nodes.iter(gpu_model="H100-SXM-80GB", state="available"):
        ...

Every method returns the API's JSON objects as dicts; every error raises ``ApiError`` carrying
the API's ``type``, ``code``, ``message`` and ``param``.
"""

from neocloud.client.base import ApiError, Client

__all__ = ["ApiError", "Client"]
