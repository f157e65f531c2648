"""A real Kubernetes control plane on loopback, for tests and ``make demo``.

``build`` compiles etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl and KWOK from pinned Go modules into a content-hashed
cache; ``cluster`` starts and stops them; ``pki`` makes the certificates.
Entry points: ``python -m devcluster`` and ``tests/conftest.py``.
"""
