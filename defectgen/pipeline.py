"""Where ``DefectGenPipeline`` used to live; it is in ``defectgen.pipelines.defectgen`` now (re-exported here)."""
from defectgen.pipelines.defectgen.guidance import Known, soft_region
from defectgen.pipelines.defectgen.pipeline_defectgen import (LEGACY_CLASS_MAP, DefectGenPipeline,
                                                              DefectGenPipelineOutput, check_channels, load_pipeline)

__all__ = ["DefectGenPipeline", "DefectGenPipelineOutput", "Known", "LEGACY_CLASS_MAP", "check_channels",
           "load_pipeline", "soft_region"]
