"""``python -m neocloud.agent``: the agent without the ``neocloud`` CLI's dependencies."""

from neocloud.agent.main import main

raise SystemExit(main())
