"""Deep multimodal pipeline: stage-wise pre-training of an MDRNN and its recurrent fine-tuning."""
