"""The Defect-Gen pipeline and its guidance, in one folder.

- ``pipeline_defectgen.py``: ``DefectGenPipeline`` (two UNets, a scheduler, the switch) and its output.
- ``guidance.py``: what is known of a sample (``Known``, ``Condition``) and the replacement step.
- ``request.py``: a guided request as the user states it (``GuidedRequest``) and the choices it makes.
- ``conditions.py``: ``build_conditions``, each sample's ``Condition`` of a request.
- ``full_size.py``: full-size pairs on runs trained on crops; ``windows.py``: their window geometry.
"""
from defectgen.pipelines.defectgen.guidance import Condition, Known, init_batch, known_batch, soft_region
from defectgen.pipelines.defectgen.pipeline_defectgen import DefectGenPipeline, DefectGenPipelineOutput, load_pipeline

__all__ = ["Condition", "DefectGenPipeline", "DefectGenPipelineOutput", "Known", "init_batch", "known_batch",
           "load_pipeline", "soft_region"]
