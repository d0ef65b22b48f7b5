"""The API's routers, one module per resource; ``api.http.create_app`` assembles them."""
