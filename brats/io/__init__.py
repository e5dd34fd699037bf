"""Reading and writing what a cohort and a model are made of: NIfTI files, case folders,
model artifacts and uploads. Every error names the case (or file) and the reason."""
