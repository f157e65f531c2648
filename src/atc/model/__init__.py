"""The ATC's vocabulary, no I/O: constants, yoke's resource specs, conditions, Go compatibility helpers,
Airway templates and the ValidatingWebhookConfiguration builders. Every other package builds on it."""
