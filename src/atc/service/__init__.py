"""What a service process needs besides the pipeline: settings, logging, the flight runtime assembled
from settings (module cache, registry credentials), heap freezing. Used by both services' start-up."""
