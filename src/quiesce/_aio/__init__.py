"""Implementation of ``quiesce.aio`` (asyncio); the public names live in ``quiesce.aio``."""
