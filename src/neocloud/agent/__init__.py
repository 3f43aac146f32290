"""The node agent: the program that runs on each GPU node and reports to the control plane.

It reads the node's GPUs through a narrow port (``gpus.GpuSource``: NVML on a real node, a
recorded inventory in tests and on test hosts, which says ``simulated`` in everything it
reports), posts a heartbeat with the inventory (on start and when it changes), telemetry and
the results of active checks (``checks``: a bf16 GEMM and an HBM copy, only when the control
plane says the node is idle) to ``POST /api/v1/agent/heartbeat``, and follows the interval the
answer gives (``loop``).

The agent is light on purpose: it imports nothing of neocloud (not even the kernel, whose
package pulls in pydantic-settings) and only the standard library at import time; ``pynvml``,
``torch`` and ``httpx`` are imported where they are used, so that ``python -m neocloud.agent
--once --print`` runs on a node that has nothing but torch and nvidia-ml-py installed.
"""

from __future__ import annotations

AGENT_VERSION_MAX = 32
"""The contract's bound on ``agent_version``."""
