"""Diffusion pipelines, each in its own folder with its helpers (as diffusers keeps them)."""
from defectgen.pipelines.defectgen import DefectGenPipeline, DefectGenPipelineOutput, load_pipeline

__all__ = ["DefectGenPipeline", "DefectGenPipelineOutput", "load_pipeline"]
