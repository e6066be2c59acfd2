"""Overload with client timeouts (see __main__)."""
