"""The GUI at /sidekiq (issue 6). For now it holds the vendored static assets the docs use."""
