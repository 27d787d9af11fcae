"""CCaaS adapters, one module each."""
