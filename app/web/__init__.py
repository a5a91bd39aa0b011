"""The GUI at /sidekiq. For now it holds the vendored static assets the docs use."""
