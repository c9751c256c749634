"""mmdit: one diffusion-transformer core (MMDiT joint attention) for images, video, audio and 3D meshes."""

from mmdit.contract import StreamSpec
from mmdit.model.backbone import MMDiT
from mmdit.model.tokens import Tokens
from mmdit.objectives.flow import RectifiedFlow

__all__ = ["MMDiT", "RectifiedFlow", "StreamSpec", "Tokens"]
__version__ = "0.1.0"
