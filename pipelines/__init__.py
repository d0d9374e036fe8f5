"""DVC stage entry points (one module a stage, each a Prefect flow) and the flows that drive them."""
