"""mmdit: one diffusion-transformer core (MMDiT joint attention) for images, video, audio and 3D meshes."""

from mmdit.backbone import MMDiT, StreamSpec
from mmdit.flow import RectifiedFlow
from mmdit.tokens import Tokens

__all__ = ["MMDiT", "RectifiedFlow", "StreamSpec", "Tokens"]
__version__ = "0.1.0"
