"""The reconcilers: ``airway.py`` (Airway -> CRD + instance controller), ``instance.py`` (the flight
of one custom resource), ``flight.py`` (Flight and ClusterFlight)."""
