"""3D meshes: shapes normalised into the unit cube as blocks of a signed-distance grid (3D RoPE) or as an
unordered set of surface points, mesh files through trimesh, the bundled `shapes` or a folder of a user's
meshes (encoded once and cached), and PointFlow's Chamfer metrics plus a shape classifier for evaluation."""

from modalities.mesh.adapter import MeshAdapter
from modalities.mesh.datasets import MeshFolder, ShapesDataset, read_mesh
from modalities.mesh.points import PointTokenizer
from modalities.mesh.sdf import SdfTokenizer

__all__ = ["MeshAdapter", "MeshFolder", "PointTokenizer", "SdfTokenizer", "ShapesDataset", "read_mesh"]
