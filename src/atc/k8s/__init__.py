"""Talking to the Kubernetes API: a JSON client, discovery (REST mapping), object references."""
