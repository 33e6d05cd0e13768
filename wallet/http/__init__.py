"""The REST API: aiohttp app, routes, validation, errors, rendering of replies."""
