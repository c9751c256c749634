"""What every modality shares, and no modality owns: train / held-out splits, labelled folders of media files,
image files and preview grids, 2-D patch tokens, the scikit-learn digits, and the classifier judge with its
Fréchet distance.

A modality package (`modalities.image`, `modalities.audio`, ...) imports from here, from `mmdit` and from
third-party libraries, never from another modality (`tests/modalities/test_layout.py`).
"""
