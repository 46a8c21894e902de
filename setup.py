"""kerapos: Keras 3 / TensorFlow position encodings that extrapolate."""

import setuptools

setuptools.setup(
    name="kerapos",
    version="0.1.0",
    description=(
        "Keras 3 position-encoding layers (sinusoidal, learned, RoPE with "
        "PI/NTK/YaRN, xPos, ALiBi, T5) and TensorFlow training pipelines "
        "that measure length extrapolation."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["kerapos", "kerapos.*"]),
    # Exact versions live in requirements.lock (what `make` installs); these
    # are the direct dependencies for users installing kerapos elsewhere.
    install_requires=[
        "tensorflow==2.21.0",
        "tensorflow-text==2.21.1",
        "keras==3.15.1",
        "keras-hub==0.32.0",
        "tensorflow-datasets==4.9.10",
        "importlib_resources",
        "absl-py",
        "tensorboard==2.21.0",
        "tensorflow-serving-api==2.21.0",
        "safetensors",
        "matplotlib",
    ],
    extras_require={"test": ["pytest"]},
)
