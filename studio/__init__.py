"""World-R1 Studio: text-to-video generation, 3D-consistency analysis and Flow-GRPO tuning."""

__version__ = "0.1.0"
