"""The controller core: a work queue per controller served round-robin, the manager, leader election, probes.

The only hand-written controller infrastructure of the service (docs/design.md, "The controller core");
the service's startup code wires Airway, instance and Flight reconcilers onto it.
"""
