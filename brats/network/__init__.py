"""The network every stage shares: the 3D U-Net, its config, and its precision policy.

Training builds it, the artifact saves and loads it, the predictor and the app run it; none of
them owns it. Nothing here imports a stage.
"""
