"""edgebuild: declarative, cached builds of ML models for edge hardware."""

__version__ = "0.1.0"
