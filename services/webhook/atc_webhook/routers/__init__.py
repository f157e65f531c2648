"""The webhook's admission routes, one module per webhook path; ``atc_webhook.server`` mounts them."""
