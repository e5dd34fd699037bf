"""Training: the 3D U-Net and its losses, and the Ray Train job that trains it."""
