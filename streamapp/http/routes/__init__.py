"""The route handlers, one module per resource; registered in streamapp.http.server."""
