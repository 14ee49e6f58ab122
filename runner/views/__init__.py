"""What a person reads about the journal, defined once and rendered by commands and the status page."""
