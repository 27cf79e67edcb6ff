"""The API's routers, one per capability; each route parses, calls one library function and formats."""
