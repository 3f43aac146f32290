"""The kernel: ids, clock, money, errors and settings. Depends on nothing else in neocloud.

Import the modules themselves (``neocloud.kernel.clock``, ``…settings``): the package imports
none of them, so the node agent can use the clock without the settings' pydantic."""
