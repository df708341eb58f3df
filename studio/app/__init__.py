"""The app layer: what the UI and the API call (services, training jobs, comparisons, the study
service, admin rights, the model catalog, ZeroGPU). Only this layer and studio/ui import training/;
the core (camera, tinyworld, pipelines, geometry, scoring, rewards, study storage, video) imports neither."""
