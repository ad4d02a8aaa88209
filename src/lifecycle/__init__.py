"""lifecycle: take perception models from raw data to a served, monitored model."""

__version__ = "0.1.0"
