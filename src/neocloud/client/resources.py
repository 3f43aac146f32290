"""The base of the SDK's resource namespaces (``client.nodes``, ``client.orgs``, …).

Each context has its resource classes in its own module; ``Client`` (``neocloud.client.base``)
declares each as a typed attribute. A resource makes its requests through the ``Transport``
it is given (``self._c``): its public ``request``, ``get``, ``post``, ``patch``, ``delete``,
``iter`` and ``get_text``.
"""

from __future__ import annotations

from neocloud.client.transport import Transport


class Resource:
    def __init__(self, client: Transport) -> None:
        self._c = client
