"""The controller core: keyed work queue, reconcile manager, reflectors, leader election and probes.

The only hand-written controller infrastructure of the service (DESIGN.md §6);
the service's startup code wires Airway, instance and Flight reconcilers onto it.
"""
