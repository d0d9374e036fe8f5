"""Networks (nn.Modules only): the KL autoencoder (`vae`, `vae_loss`, `distributions`), the
conditional latent UNet (`unet`, `unet_core`, `condition`, `time_embedding`, `attention`,
`fft_filter`, `blocks`) and the supervised baseline (`baseline`).

Import from the modules themselves: this file stays empty, so a stage that needs one network
(and dvc.yaml, which lists what each stage imports) does not pull in the others.
"""
