"""The webhook service: admission and conversion webhooks called by kube-apiserver."""
