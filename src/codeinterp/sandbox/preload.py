"""The library set the full zygote imports once, before it forks any session."""

# The libraries sessions find already imported. Order: heaviest first, so their import-time
# side effects settle before the rest.
PRELOAD = (
    "numpy",
    "pandas",
    "matplotlib",
    "matplotlib.pyplot",
    "scipy",
    "scipy.stats",
    "scipy.optimize",
    "scipy.linalg",
    "scipy.interpolate",
    "sklearn",
    "sklearn.linear_model",
    "sklearn.model_selection",
    "sklearn.preprocessing",
    "sklearn.metrics",
    "sklearn.ensemble",
    "PIL.Image",
    "openpyxl",
    "pypdf",
    "PyPDF2",
    "seaborn",
    "sympy",
)
