"""runner: declarative, YAML-driven order automation for trading ops teams."""
