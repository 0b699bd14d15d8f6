"""Other people's models as denoisers (import the submodules directly; diffusers, transformers and peft
are imported only where needed).

  parameterization  eps / v / flow / x0 predictions and VP / flow schedules as EDM denoisers
  diffusers         diffusers networks (DiffusersDenoiser, from_pipeline) and their schedulers
  latents           VAE latents (LatentCodec, EDM2's decoder)
  precision         half / bfloat16 inference
  pipelines         class-conditional and unconditional diffusers pipelines (generate-diffusers)

Text-to-image (the `text` extra):

  text              prompt embeddings as the denoiser's `cond`; TextDenoiser; per-family prompt encoding
  text_pipelines    loading IF stage I, SD 1.5 / 2, SDXL, SD3 from folders or hub names; guide checks
  sigmas            EDM's sigmas, or the pipeline's scheduler's own steps as EDM sigmas
  lora              LoRA guides sharing the main model's weights (adapters switched per evaluation)
  thresholding      IF's dynamic thresholding of the (guided) x0 estimate
  text_generate     CFG + autoguidance through `guidance.guided` and `generate`; the Figure 5-6 grid
  upscale           IF stages II and III on the guided stage-I images
  hf_logs           loaders' log output collected, so that a bad file is one line

Training-free guides of these networks (skipped blocks, attention temperature) are in `guides`.
"""
