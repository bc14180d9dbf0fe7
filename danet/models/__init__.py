from danet.models.backbone import BACKBONES, Backbone
from danet.models.head import DANetHead
from danet.models.segmentor import Segmentor

__all__ = ["BACKBONES", "Backbone", "DANetHead", "Segmentor"]
