"""Flights as yoke defines them: running one for an input and turning its output into stages."""
