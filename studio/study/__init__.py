"""A/B preference study: database (db), studies/battles/votes (battles), statistics (stats),
handlers for the UI and API (service)."""
