from setuptools import find_packages, setup

setup(
    name="twocol",
    version="0.1.0",
    description="The two-GPU model-parallel AlexNet of Krizhevsky, Sutskever and Hinton (2012)",
    package_dir={"": "src"},
    packages=find_packages("src"),
    python_requires=">=3.10",
    install_requires=["torch", "numpy", "pillow", "pyyaml", "matplotlib"],
    extras_require={"dali": ["nvidia-dali-cuda130"], "test": ["pytest"]},
    entry_points={"console_scripts": ["twocol=twocol.cli:main"]},
)
