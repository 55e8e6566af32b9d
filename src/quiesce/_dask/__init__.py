"""quiesce on a Dask cluster: the worker plugin, the Executor, DistributedToken.

Only ``quiesce.dask`` imports this package, after checking that
``distributed`` is installed.
"""
