"""Networks and building blocks; every block takes its ops as arguments and implements
``compute_conv_feature_map_size`` so nnU-Net's planner can estimate memory."""
