"""Use the data: the format contract, tree tools, flat configs, loading, the Hub layout and segment frames."""
