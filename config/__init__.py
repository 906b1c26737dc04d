"""Settings, catalog and scenario models, and logging. Imports neither agents/ nor workers/."""
