"""The controller service: reconciles Airways, their instances, Flights and ClusterFlights."""
