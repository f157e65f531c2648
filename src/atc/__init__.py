"""The shared library of the Python Air Traffic Controller.

Both services (``atc_controller`` and ``atc_webhook``) build on it; it never
imports either of them. Modules: ``settings`` (flags and environment),
``logs`` (JSON/text logging).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
