"""Group analyses: one dask graph over many subjects, with a results store."""
