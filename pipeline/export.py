"""Stage export: models/best.* + vocabulary + model card -> models/export/."""

from nmt.stages.export import export
from nmt.stages.runner import run_stage

if __name__ == "__main__":
    run_stage(export)
