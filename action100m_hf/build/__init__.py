"""Build more data: the pipeline's settings, stages, executor, work store and merge (`action100m build`)."""
