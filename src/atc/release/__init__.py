"""A release from flight to cluster: the takeoff request builders (instances, Flights, ClusterFlights), the
flight invocation, the stages it outputs, the apply in stages, revisions (yoke's release Secrets) and
pruning. Used by the controller's reconcilers and by the webhook's dry runs."""
