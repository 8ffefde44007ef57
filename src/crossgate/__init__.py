"""crossgate: few-shot image classification on frozen vision-language encoders, with dynamic gating."""
__version__ = "0.1.0"
