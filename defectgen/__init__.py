"""defectgen: few-shot defect image + mask generation (Defect-Gen) and its evaluation."""

__version__ = "0.1.0"
