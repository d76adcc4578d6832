"""Test helpers: the scripted upstream model and our server as a subprocess."""
