"""The HTTP application: factory, middleware, error mapping, audit and start-up."""
