"""The Lensbench Qt application: window, worker thread, controller, sessions and settings."""
