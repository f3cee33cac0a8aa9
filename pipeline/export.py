"""Stage export: models/best.* + vocabulary + model card -> models/export/."""

from nmt.export import export
from nmt.stage import run_stage

if __name__ == "__main__":
    run_stage(export)
